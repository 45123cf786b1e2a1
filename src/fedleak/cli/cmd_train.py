"""``fedleak train``: a federated training run; writes metrics.json and model.safetensors."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train(
        dataset: str = typer.Option(
            ..., help="dataset spec, e.g. digits, imagefolder:PATH or text:PATH (see `fedleak datasets`)"
        ),
        model: str = typer.Option(
            "mlp",
            help="model spec: lenet, convnet[:W], resnet18, resnet20, mlp[:H1,H2], transformer (text), gpt[:lora=R] "
            "(text LM: next-token loss), or yours: file.py:factory",
        ),
        weights: Path = typer.Option(
            None, help="start the global model from these weights (.safetensors, e.g. an earlier run's model)"
        ),
        clients: int = typer.Option(10, help="number of clients N"),
        rounds: int = typer.Option(10, help="federated rounds R"),
        fraction: float = typer.Option(1.0, help="fraction of clients sampled each round"),
        mode: str = typer.Option("fedavg", help="fedavg (local SGD, send w1 - w0) or fedsgd (send one gradient)"),
        local_epochs: int = typer.Option(1, help="FedAvg local epochs E"),
        batch_size: int = typer.Option(32, help="local batch size B"),
        lr: float = typer.Option(0.1, help="local learning rate"),
        partition: str = typer.Option("iid", help="iid, dirichlet:ALPHA or shards:K"),
        test_fraction: float = typer.Option(0.2, help="share of the records held out for testing"),
        samples: int = typer.Option(0, help="use a seeded random subset of this many records (0: all)"),
        seed: int = typer.Option(0, help="seed for the split, partition, model and training"),
        device: str = typer.Option("cpu", help="cpu, cuda, cuda:N or auto"),
        defense: list[str] = typer.Option(  # noqa: B008
            [],
            "--defense",
            help="defense spec, repeatable: dp-sgd:epsilon=8,delta=1e-5, client-dp:noise=1,clip=1, "
            "prune:0.9, quantize:8, noise:0.01, clip:1, secagg:K",
        ),
        out: Path = typer.Option(Path("runs/train"), help="run folder"),
    ) -> None:
        """Federated training on a partition of a dataset; prints and saves test accuracy per round."""
        from fedleak.audit.train import run_training
        from fedleak.cli.common import check_federation, out_dir, say

        out_dir(out)
        check_federation(clients, rounds, defense)
        run_training(
            dataset=dataset,
            model=model,
            clients=clients,
            rounds=rounds,
            fraction=fraction,
            mode=mode,
            local_epochs=local_epochs,
            batch_size=batch_size,
            lr=lr,
            partition=partition,
            test_fraction=test_fraction,
            samples=samples,
            seed=seed,
            device=device,
            defenses=defense,
            out=out,
            echo=say,
            weights=weights,
        )
