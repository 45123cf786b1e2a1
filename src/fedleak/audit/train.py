"""A federated training run: data -> split -> partition -> rounds -> ``metrics.json`` + ``model.safetensors``."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from fedleak.data import Dataset, load
from fedleak.errors import FedleakInputError
from fedleak.runio import atomic_write_json


def train_test_split(data: Dataset, test_fraction: float, samples: int = 0, seed: int = 0) -> tuple[Dataset, Dataset]:
    """A seeded subset of ``samples`` records (0: all), then a seeded train/test split."""
    if not 0 < test_fraction < 1:
        raise FedleakInputError(f"--test-fraction {test_fraction}: must be between 0 and 1")
    if samples < 0:
        raise FedleakInputError(f"--samples {samples}: must be 0 (all) or positive")
    if samples:
        if samples > len(data):
            raise FedleakInputError(f"--samples {samples}: the dataset has only {len(data)} records")
        data, _ = data.split(1 - samples / len(data), seed=seed + 1)
    return data.split(test_fraction, seed=seed)


def run_training(
    *,
    dataset: str,
    model: str,
    clients: int,
    rounds: int,
    fraction: float = 1.0,
    mode: str = "fedavg",
    local_epochs: int = 1,
    batch_size: int = 32,
    lr: float = 0.1,
    partition: str = "iid",
    test_fraction: float = 0.2,
    samples: int = 0,
    seed: int = 0,
    device: str = "cpu",
    defenses: list[str] | None = None,
    out: Path | None = None,
    echo: Callable[[str], None] = print,
) -> dict:
    """Run federated training and (when ``out`` is given) write ``metrics.json`` and ``model.safetensors``.

    ``defenses``: ``--defense`` specs (``fedleak.defenses.plan``); what they promise is ``privacy`` in
    the metrics.
    """
    import torch

    from fedleak.defenses import plan
    from fedleak.fl import FedConfig, Federation
    from fedleak.models import build, save_weights
    from fedleak.progress import progress

    config = FedConfig(
        clients=clients,
        rounds=rounds,
        fraction=fraction,
        mode=mode,
        local_epochs=local_epochs,  # type: ignore[arg-type]
        batch_size=batch_size,
        lr=lr,
        partition=partition,
        seed=seed,
    )
    config.validate()
    defense_plan = plan(defenses).bind(rounds=rounds, clients=clients)
    data = load(dataset)
    if data.spec.modality == "text":
        raise FedleakInputError(f"{dataset}: fedleak train takes image or table datasets")
    train, test = train_test_split(data, test_fraction, samples, seed)
    torch.manual_seed(seed)
    net = defense_plan.prepare(build(model, data.spec, seed=seed, device=device))
    fed = Federation(net, train, test, config, **defense_plan.federation_options)
    rows = []
    t0 = time.perf_counter()
    for r in progress(fed.run(keep_updates=False), rounds, "rounds", plain_lines=0):
        rows.append(
            {
                "round": r.round,
                "test_accuracy": r.test_accuracy,
                "test_loss": r.test_loss,
                "clients": r.sampled,
                "seconds": r.seconds,
            }
        )
        echo(f"round {r.round:>3}  test accuracy {r.test_accuracy:.4f}  loss {r.test_loss:.4f}  ({r.seconds:.2f} s)")
    result = {
        "kind": "train",
        "dataset": dataset,
        "model": model,
        "seed": seed,
        "config": {k: getattr(config, k) for k in config.__dataclass_fields__},
        "train_size": len(train),
        "test_size": len(test),
        "rounds": rows,
        "defenses": defense_plan.label,
        "privacy": defense_plan.privacy(),
        "seconds_total": time.perf_counter() - t0,
    }
    if defense_plan.secagg:
        result["privacy"]["notes"].append(
            f"secagg:{defense_plan.secagg} changes what the server sees, not the model: accuracy is unchanged"
        )
    if out is not None:
        save_weights(net, Path(out) / "model.safetensors")
        atomic_write_json(Path(out) / "metrics.json", result)
        echo(f"wrote {Path(out) / 'metrics.json'} and {Path(out) / 'model.safetensors'}")
    return result
