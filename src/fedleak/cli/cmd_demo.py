"""``fedleak demo``: the built-in run on bundled data (until the full audit lands: a short federated training)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(out: Path = typer.Option(Path("runs/demo"), help="run folder")) -> None:
        """A short federated training on bundled digits, printing test accuracy per round."""
        from fedleak.audit.train import run_training
        from fedleak.cli.common import out_dir, say

        out_dir(out)
        run_training(dataset="digits", model="mlp", clients=10, rounds=10, seed=0, out=out, echo=say)
