"""``fedleak audit-flower RUN_DIR``: attack the views an audited Flower run saved (RUN_DIR/views/*.safetensors)
after the run, off its critical path, and write RUN_DIR/results.json and report.html."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("audit-flower")
    def audit_flower(
        run_dir: Path = typer.Argument(..., help="run folder of an audited Flower run (holds views/*.safetensors)"),
        attack: list[str] = typer.Option(  # noqa: B008
            ["auto"], "--attack", help="inversion attack, repeatable; auto: those that fit each update"
        ),
        model: str = typer.Option(
            None,
            help="model spec (path/to/file.py:factory or package.module:factory) when the views name a module "
            "handed over in the app's own process",
        ),
        records_of: str = typer.Option(
            None,
            help="path/to/file.py:function or package.module:function, function(partition) -> (inputs, labels): "
            "the records each reconstruction is scored against (a simulation knows them)",
        ),
        iterations: int = typer.Option(0, help="optimiser steps of optimisation attacks (0: the attack's default)"),
        seed: int = typer.Option(0, help="seed of the attacks"),
    ) -> None:
        """Attack the views of an audited Flower run after it ended; write results.json and report.html."""
        from fedleak.cli.common import say
        from fedleak.flower.saved import audit_saved_views

        res = audit_saved_views(
            run_dir, attacks=attack, model=model, records_of=records_of, iterations=iterations, seed=seed
        )
        for e in res.scenarios[0].inversion:
            s = e.summary
            if s is not None:
                what = f"{s.rebuilt}/{s.total} rebuilt, PSNR median {s.psnr_median:.1f} dB"
            else:
                what = f"{e.status}: {e.note}" if e.status != "done" else (e.note or "not scored")
            who = f"client {e.clients[0]}" if e.clients else f"aggregate of {e.realism.num_clients}"
            say(f"round {e.round}, {who}: {e.attack}: {what}")
        for line in res.verdict:
            say(line)
        say(f"wrote {Path(run_dir) / 'results.json'} and {Path(run_dir) / 'report.html'}")
