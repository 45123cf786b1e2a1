"""``fedleak audit CONFIG.toml`` and ``fedleak demo``: a federated setup in, a run folder and report out."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("audit")
    def audit(
        config: Path = typer.Argument(..., help="audit config (.toml); see README for a worked example"),
        out: Path = typer.Option(Path("runs/audit"), help="run folder"),
        resume: bool = typer.Option(False, "--resume", help="continue a run that was interrupted"),
    ) -> None:
        """Audit a federated setup: training, inversion and membership attacks per defense, and a report."""
        from fedleak.audit.config import load_config
        from fedleak.audit.pipeline import run_audit
        from fedleak.cli.common import say

        run_audit(load_config(config), out, resume=resume, echo=say)

    @app.command("demo")
    def demo(
        out: Path = typer.Option(Path("runs/demo"), help="run folder"),
        resume: bool = typer.Option(False, "--resume", help="continue a run that was interrupted"),
    ) -> None:
        """The audit of a built-in config on bundled data (faces and digits), with its report, in minutes."""
        import shutil
        import tomllib
        from importlib.resources import files

        from fedleak.audit.config import parse_config
        from fedleak.audit.pipeline import run_audit
        from fedleak.cli.common import say

        text = files("fedleak.audit").joinpath("demo.toml").read_text()
        if out.exists() and not resume:
            shutil.rmtree(out / "stages", ignore_errors=True)  # the demo always starts fresh unless resumed
        run_audit(parse_config(tomllib.loads(text), "demo.toml"), out, resume=resume, echo=say)
