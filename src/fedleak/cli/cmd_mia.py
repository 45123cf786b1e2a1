"""``fedleak mia``: one membership-inference experiment; writes results.json and roc.png, prints a table."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("mia")
    def mia(
        dataset: str = typer.Option(..., help="dataset spec, e.g. digits, breast-cancer, imagefolder:PATH"),
        model: str = typer.Option(
            "mlp", help="model spec: mlp[:H1,H2], lenet, convnet[:W], resnet20, or yours: file.py:factory"
        ),
        weights: Path = typer.Option(
            None, help="the target's initial weights (.safetensors, e.g. from fedleak train); it trains from them"
        ),
        attack: str = typer.Option(
            "all",
            help="loss|confidence|entropy|mentropy (+ -class)|shokri|lira|lira-offline|rmia|rmia-offline|quantile|all",
        ),
        members: int = typer.Option(500, help="M records train the target; M more are held-out non-members"),
        population: int = typer.Option(0, help="cap the attacker's population records (0: all the rest)"),
        references: int = typer.Option(16, help="K reference / shadow models (LiRA, RMIA, Shokri), >= 2"),
        shadow_data: str = typer.Option("population", help="Shokri's shadow data: population, noisy, synthetic"),
        epochs: int = typer.Option(50, help="target (and reference) training epochs; the default fits the data"),
        lr: float = typer.Option(0.1, help="SGD learning rate"),
        momentum: float = typer.Option(0.9, help="SGD momentum"),
        batch_size: int = typer.Option(64, help="minibatch size"),
        defense: list[str] = typer.Option([], help="defense spec for the target's training, e.g. dp-sgd:epsilon=8"),
        sequential: bool = typer.Option(False, help="train reference models one after another (for comparison)"),
        backend: str = typer.Option("local", help="where reference models train: local or ray (Ray tasks)"),
        ray_address: str = typer.Option(None, help="with --backend ray: an existing cluster, e.g. HEAD:6379"),
        seed: int = typer.Option(0, help="seed for the split, the models and the attacks"),
        device: str = typer.Option("cpu", help="cpu, cuda, cuda:N or auto"),
        out: Path = typer.Option(Path("runs/mia"), help="run folder"),
    ) -> None:
        """Train a target as users train it, then tell its members from non-members with each attack."""
        from fedleak.audit.mia import run_mia
        from fedleak.cli.common import out_dir, say
        from fedleak.errors import FedleakInputError
        from fedleak.progress import is_terminal, progress_bar

        out_dir(out)
        if backend not in ("local", "ray"):
            raise FedleakInputError(f"--backend {backend!r}: choose local or ray")
        if not 0 <= momentum < 1:
            raise FedleakInputError(f"--momentum {momentum}: SGD momentum lies in [0, 1), e.g. 0.9 (0: none)")
        if ray_address and backend != "ray":
            raise FedleakInputError("--ray-address needs --backend ray")
        trainer = None
        if backend == "ray":
            from fedleak.flower import ray_reference_trainer

            trainer = ray_reference_trainer(address=ray_address)
        with progress_bar("reference models") as report:  # a bar with ETA on a terminal, plain lines in pipes
            run_mia(
                dataset=dataset,
                model=model,
                attack=attack,
                members=members,
                population=population,
                references=references,
                shadow_data=shadow_data,
                epochs=epochs,
                lr=lr,
                momentum=momentum,
                batch_size=batch_size,
                defense=defense,
                vectorised=not sequential,
                seed=seed,
                device=device,
                out=out,
                echo=say,
                reference_trainer=trainer,
                on_progress=report if is_terminal() else None,
                weights=weights,
            )
