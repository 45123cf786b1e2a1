"""Local engine vs Flower engine on the same setup and seed: per-round test accuracy side by side.

    python -m fedleak.flower.compare --dataset digits --model mlp --clients 5 --rounds 5 --mode fedavg

prints one line per round (local accuracy, Flower accuracy, difference) and the wall times of both engines.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from fedleak.fl.server import FedConfig


def compare_engines(dataset: str, model: str, config: FedConfig, *, client_cpus: float = 1.0) -> dict[str, Any]:
    """Run ``config`` on both engines; returns per-round accuracies and seconds of each."""
    from fedleak.data import load
    from fedleak.fl.server import Federation
    from fedleak.flower.federation import RayOptions, run_flower_federation
    from fedleak.models import build

    data = load(dataset)
    train, test = data.split(0.2, seed=config.seed)
    t0 = time.perf_counter()
    local = [r.test_accuracy for r in Federation(build(model, data.spec, seed=config.seed), train, test, config).run()]
    t_local = time.perf_counter() - t0
    t0 = time.perf_counter()
    run = run_flower_federation(
        build(model, data.spec, seed=config.seed),
        train,
        test,
        config,
        ray=RayOptions(client_cpus=client_cpus),
    )
    t_flower = time.perf_counter() - t0
    flower = [r.test_accuracy for r in run.rounds]
    return {
        "local": local,
        "flower": flower,
        "seconds_local": t_local,
        "seconds_flower": t_flower,
        "max_abs_diff": max(abs(a - b) for a, b in zip(local, flower, strict=True)) if local else 0.0,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="fedleak's local engine vs Flower's simulation engine")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--model", default="mlp")
    p.add_argument("--clients", type=int, default=5)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--mode", default="fedavg", choices=["fedavg", "fedsgd"])
    p.add_argument("--fraction", type=float, default=1.0)
    p.add_argument("--local-epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--client-cpus", type=float, default=1.0)
    a = p.parse_args(argv)
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    cfg = FedConfig(
        clients=a.clients,
        rounds=a.rounds,
        fraction=a.fraction,
        mode=a.mode,
        local_epochs=a.local_epochs,
        batch_size=a.batch_size,
        lr=a.lr,
        seed=a.seed,
    )
    out = compare_engines(a.dataset, a.model, cfg, client_cpus=a.client_cpus)
    print("round  local   flower  diff")
    for i, (lo, fl) in enumerate(zip(out["local"], out["flower"], strict=True), 1):
        print(f"{i:5d}  {lo:.4f}  {fl:.4f}  {fl - lo:+.4f}")
    print(f"seconds: local {out['seconds_local']:.1f}, flower {out['seconds_flower']:.1f}")


if __name__ == "__main__":
    main()
