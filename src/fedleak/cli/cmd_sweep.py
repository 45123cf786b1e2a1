"""``fedleak sweep``: a grid of defenses against the attacks; a table and a privacy-utility plot."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("sweep")
    def sweep(
        dataset: str = typer.Option(..., help="dataset spec, e.g. digits or imagefolder:PATH"),
        model: str = typer.Option("mlp", help="model spec, e.g. lenet or mlp"),
        defense: list[str] = typer.Option(  # noqa: B008
            ...,
            "--defense",
            help="a defense grid, repeatable (one curve each): prune:0.5,0.9,0.99 or dp-sgd:epsilon=1,4,8",
        ),
        invert: str = typer.Option(None, help="inversion attack per point, e.g. idlg"),
        mia: str = typer.Option(None, help="membership attack per point, e.g. loss or lira"),
        indices: str = typer.Option(None, help="inversion targets, e.g. 0,5000,10000"),
        iterations: int = typer.Option(None, help="inversion iterations"),
        members: int = typer.Option(None, help="membership: training members of the target"),
        references: int = typer.Option(None, help="membership: reference models (LiRA, RMIA)"),
        clients: int = typer.Option(10, help="utility without --mia: clients of the defended training"),
        rounds: int = typer.Option(10, help="utility without --mia: rounds of the defended training"),
        samples: int = typer.Option(0, help="utility without --mia: a seeded subset of N records (0: all)"),
        seed: int = typer.Option(0, help="seed of every run"),
        device: str = typer.Option("cpu", help="cpu, cuda, cuda:N or auto"),
        resume: bool = typer.Option(False, help="reuse the points an earlier sweep in --out finished"),
        out: Path = typer.Option(Path("runs/sweep"), help="run folder"),
    ) -> None:
        """Run each defense grid point with the chosen attacks: a table and a privacy-utility plot."""
        from fedleak.audit.sweep import run_sweep
        from fedleak.cli.common import int_list, out_dir, say

        out_dir(out)
        check_utility_training(dataset, defense, clients, rounds, samples, seed)
        run_sweep(
            dataset=dataset,
            model=model,
            defenses=defense,
            invert=invert,
            mia=mia,
            indices=int_list(indices, "--indices"),
            iterations=iterations,
            members=members,
            references=references,
            clients=clients,
            rounds=rounds,
            samples=samples,
            seed=seed,
            device=device,
            resume=resume,
            out=out,
            echo=say,
        )


def check_utility_training(dataset: str, grids: list[str], clients: int, rounds: int, samples: int, seed: int) -> None:
    """Everything the utility training of each grid point needs, checked before the first point runs (a sweep
    that fails at its last point leaves hours of work and a folder without results)."""
    from fedleak.audit.sweep import grid_points
    from fedleak.audit.train import train_test_split
    from fedleak.cli.common import check_federation
    from fedleak.data import load
    from fedleak.data.partition import partition

    specs = [spec for _, spec in grid_points(grids) if spec != "none"]
    check_federation(clients, rounds, specs, where="the utility training (--clients)")
    train, _ = train_test_split(load(dataset), 0.2, samples, seed)
    partition(train.labels, "iid", clients, seed)
