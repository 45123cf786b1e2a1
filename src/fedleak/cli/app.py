"""The typer application; each command lives in its own module and registers itself here."""

from __future__ import annotations

import importlib

import typer
from typer import rich_utils

# typer escapes "[default: ...]" for rich markup whenever rich is installed, even with markup off, so plain
# --help showed "\\[default: ...]"; with rich_markup_mode=None nothing is markup, so nothing needs escaping.
rich_utils.escape_before_html_export = lambda text: text.strip()

app = typer.Typer(
    name="fedleak",
    help="Measure what federated learning leaks: gradient inversion, membership inference, defenses, audits.",
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    no_args_is_help=True,
)


def _version(value: bool) -> None:
    if value:
        from fedleak import __version__

        typer.echo(f"fedleak {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="print fedleak's version and exit"
    ),
) -> None:
    """Measure what federated learning leaks: gradient inversion, membership inference, defenses, audits."""


# one module per command; each defines register(app)
COMMANDS = ("datasets", "train", "audit", "report", "sweep", "invert", "mia", "audit_dp", "audit_flower")

for _name in COMMANDS:
    importlib.import_module(f"fedleak.cli.cmd_{_name}").register(app)
