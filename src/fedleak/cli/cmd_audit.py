"""``fedleak audit CONFIG.toml`` and ``fedleak demo``: a federated setup in, a run folder and report out."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from fedleak.audit.config import AuditConfig

SEED_HELP = "seed of the whole run (replaces the config's seed)"
DEVICE_HELP = "cpu, cuda, cuda:N or auto (replaces the config's device)"


def with_overrides(config: AuditConfig, source: str, seed: int | None, device: str | None) -> AuditConfig:
    """The config with the command line's --seed / --device in place of its own, validated like the file."""
    from fedleak.audit.config import parse_config

    if seed is None and device is None:
        return config
    data = config.model_dump(exclude_none=True)
    if seed is not None:
        data["seed"] = seed
    if device is not None:
        data["device"] = device
    return parse_config(data, source)


def register(app: typer.Typer) -> None:
    @app.command("audit")
    def audit(
        config: Path = typer.Argument(..., help="audit config (.toml); see README for a worked example"),
        out: Path = typer.Option(Path("runs/audit"), help="run folder"),
        resume: bool = typer.Option(False, "--resume", help="continue a run that was interrupted"),
        seed: int | None = typer.Option(None, help=SEED_HELP, show_default=False),
        device: str | None = typer.Option(None, help=DEVICE_HELP, show_default=False),
    ) -> None:
        """Audit a federated setup: training, inversion and membership attacks per defense, and a report."""
        from fedleak.audit.config import load_config
        from fedleak.audit.pipeline import run_audit
        from fedleak.cli.common import say

        cfg = with_overrides(load_config(config), str(config), seed, device)
        run_audit(cfg, out, resume=resume, echo=say)

    @app.command("demo")
    def demo(
        out: Path = typer.Option(Path("runs/demo"), help="run folder"),
        resume: bool = typer.Option(False, "--resume", help="continue a run that was interrupted"),
        seed: int | None = typer.Option(None, help=SEED_HELP, show_default=False),
        device: str | None = typer.Option(None, help=DEVICE_HELP, show_default=False),
    ) -> None:
        """The audit of a built-in config on bundled data (faces and digits), with its report, in minutes."""
        import shutil
        import tomllib
        from importlib.resources import files

        from fedleak.audit.config import parse_config
        from fedleak.audit.pipeline import run_audit
        from fedleak.cli.common import say

        text = files("fedleak.audit").joinpath("demo.toml").read_text()
        cfg = with_overrides(parse_config(tomllib.loads(text), "demo.toml"), "demo.toml", seed, device)
        if out.exists() and not resume:
            shutil.rmtree(out / "stages", ignore_errors=True)  # the demo always starts fresh unless resumed
        run_audit(cfg, out, resume=resume, echo=say)
