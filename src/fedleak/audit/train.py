"""A federated training run: data -> split -> partition -> rounds -> ``metrics.json`` + ``model.safetensors``."""

from __future__ import annotations

import math
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


def _lm_row(accuracy: float, loss: float) -> dict:
    """A language model's test figures: next-token accuracy, mean cross-entropy per predicted token (nats) and
    its perplexity, over the test records' real positions (padding masked)."""
    return {"test_next_token_accuracy": accuracy, "test_loss": loss, "test_perplexity": math.exp(min(loss, 700.0))}


def _lm_line(row: dict) -> str:
    return (
        f"test next-token accuracy {row['test_next_token_accuracy']:.4f}  loss {row['test_loss']:.4f}  "
        f"perplexity {row['test_perplexity']:.1f}"
    )


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
    weights: str | Path | None = None,
) -> dict:
    """Run federated training and (when ``out`` is given) write ``metrics.json`` and ``model.safetensors``.

    ``defenses``: ``--defense`` specs (``fedleak.defenses.plan``); what they promise is ``privacy`` in
    the metrics. ``weights``: a safetensors file (e.g. an earlier run's ``model.safetensors``) the global model
    starts from instead of its seeded initialisation (shapes checked).

    A language model (``--model gpt`` on a text dataset) trains on next-token prediction, the records' labels
    unused; each round then reports ``test_next_token_accuracy``, ``test_loss`` (nats per predicted token) and
    ``test_perplexity`` instead of ``test_accuracy``, with the untrained model's figures in ``initial``. With
    ``gpt:lora=R`` the clients train and send only the adapters; the weights file holds the whole model.
    """
    import torch

    from fedleak.defenses import plan
    from fedleak.fl import FedConfig, Federation, evaluate
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
    train, test = train_test_split(data, test_fraction, samples, seed)
    torch.manual_seed(seed)
    net = defense_plan.prepare(build(model, data.spec, seed=seed, device=device, weights=weights))
    lm = callable(getattr(net, "training_targets", None))  # a language model: next-token loss, labels unused
    if lm and data.spec.modality != "text":
        raise FedleakInputError(f"--model {model} is a language model; give it a text dataset (text:PATH)")
    fed = Federation(net, train, test, config, **defense_plan.federation_options)
    rows = []
    t0 = time.perf_counter()
    initial = _lm_row(*evaluate(net, fed.test_x, fed.test_y)) if lm else None
    if initial is not None:
        echo(f"round   0  {_lm_line(initial)}")
    for r in progress(fed.run(keep_updates=False), rounds, "rounds", plain_lines=0):
        row = (
            _lm_row(r.test_accuracy, r.test_loss)
            if lm
            else {"test_accuracy": r.test_accuracy, "test_loss": r.test_loss}
        )
        rows.append({"round": r.round, **row, "clients": r.sampled, "seconds": r.seconds})
        line = _lm_line(row) if lm else f"test accuracy {r.test_accuracy:.4f}  loss {r.test_loss:.4f}"
        echo(f"round {r.round:>3}  {line}  ({r.seconds:.2f} s)")
    result = {
        "kind": "train",
        "dataset": dataset,
        "model": model,
        "weights": str(weights) if weights is not None else None,  # the starting point (None: seeded init)
        "seed": seed,
        "objective": "next-token" if lm else "classification",
        "config": {k: getattr(config, k) for k in config.__dataclass_fields__},
        "train_size": len(train),
        "test_size": len(test),
        "rounds": rows,
        **({"initial": initial, "uniform_perplexity": data.spec.vocab_size} if lm else {}),
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
