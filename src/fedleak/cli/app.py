"""The typer application; each command lives in its own module and registers itself here."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="fedleak",
    help="Measure what federated learning leaks: gradient inversion, membership inference, defenses, audits.",
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    no_args_is_help=True,
)

# one module per command; each defines register(app)
COMMANDS = ("datasets", "train", "audit", "report", "sweep", "invert", "mia")

for _name in COMMANDS:
    importlib.import_module(f"fedleak.cli.cmd_{_name}").register(app)
