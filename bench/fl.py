"""Federated-simulation benchmark: seconds per round and test accuracy after R rounds.

    python bench/fl.py [--cifar PATH] [--rounds R]

Settings: digits/mlp (10 clients, IID and Dirichlet 0.3) and, when the CIFAR-10 tarball is there, CIFAR-10 with
convnet (a seeded 5,000-image subset, 10 clients, FedAvg, 1 local epoch).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import fedleak
from fedleak.audit.train import train_test_split
from fedleak.fl import FedConfig, Federation

DEFAULT_CIFAR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-train-jpeg.tar.gz"


def run(spec: str, model: str, cfg: FedConfig, samples: int = 0) -> dict:
    data = fedleak.data.load(spec)
    train, test = train_test_split(data, 0.2, samples, cfg.seed)
    net = fedleak.models.build(model, data.spec, seed=cfg.seed)
    fed = Federation(net, train, test, cfg)
    t0 = time.perf_counter()
    results = list(fed.run(keep_updates=False))
    secs = time.perf_counter() - t0
    return {
        "accs": [r.test_accuracy for r in results],
        "sec_per_round": secs / len(results),
        "train": len(train),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cifar", type=Path, default=DEFAULT_CIFAR)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--cifar-rounds", type=int, default=5)
    ap.add_argument("--cifar-model", default="convnet:16")
    ap.add_argument("--full-width", action="store_true", help="also convnet (width 64) on 1,250 CIFAR images")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    header = f"{'dataset':<22} {'model':<11} {'partition':<14} {'rounds':>6} {'s/round':>8} {'acc@R':>7}"
    print(header + "  accuracy by round", flush=True)

    def show(ds: str, model: str, part: str, rounds: int, r: dict) -> None:
        trail = " ".join(f"{a:.2f}" for a in r["accs"])
        print(
            f"{ds:<22} {model:<11} {part:<14} {rounds:>6} {r['sec_per_round']:>8.3f} {r['accs'][-1]:>7.3f}  {trail}",
            flush=True,
        )

    for part in ("iid", "dirichlet:0.3"):
        cfg = FedConfig(clients=10, rounds=args.rounds, partition=part, seed=0)
        show("digits", "mlp", part, args.rounds, run("digits", "mlp", cfg))
    if not args.cifar.exists():
        print(f"(CIFAR-10 tarball not found at {args.cifar}: skipped)")
        return
    spec = f"imagefolder:{args.cifar}"
    fedleak.data.load(spec)  # decode/cache outside the timing
    models = [(args.cifar_model, 5000)] + ([("convnet", 1250)] if args.full_width else [])
    for model, samples in models:
        cfg = FedConfig(clients=10, rounds=args.cifar_rounds, lr=0.05, seed=0)
        r = run(spec, model, cfg, samples=samples)
        show(f"cifar10 ({r['train']} train)", model, "iid", args.cifar_rounds, r)


if __name__ == "__main__":
    main()
