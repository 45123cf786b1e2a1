"""``fedleak report RUN_DIR``: rebuild report.html from a run folder's results.json and pictures."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report(
        run_dir: Path = typer.Argument(..., help="run folder holding results.json (from audit, demo, invert, mia)"),
        out: Path = typer.Option(None, help="where to write the report (default RUN_DIR/report.html)"),
    ) -> None:
        """Write one self-contained report.html (pictures embedded, no scripts) and print its path."""
        from fedleak.cli.common import say
        from fedleak.report import build_report

        say(str(build_report(run_dir, out)))
