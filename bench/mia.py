"""Membership-inference benchmark: every attack's AUC, TPR at 0.1% / 1% FPR and seconds, and reference models
trained vectorised vs one after another (models per second, the ratio, and each path's accuracy per model).

    python bench/mia.py [--cifar PATH] [--ks 4,16,64] [--skip-attacks] [--skip-speed] [--skip-cifar]

Settings: digits/mlp (500 members, 16 references), breast-cancer/mlp (150 members) and, when the CIFAR-10
tarball is there, CIFAR-10 with convnet (a modest member count so that it runs in minutes on 2 cores).
The slow and the fast reference trainers run in the same process, on the same masks, so the ratio holds on a
noisy machine.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import fedleak
from fedleak.attacks.membership import balanced_masks, train_references
from fedleak.audit.mia import run_mia
from fedleak.fl import TrainSpec

DEFAULT_CIFAR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-train-jpeg.tar.gz"


def attacks_table(label: str, **options: object) -> None:
    r = run_mia(attack="all", echo=lambda s: None, **options)  # type: ignore[arg-type]
    t = r["target"]
    refs = r["references"]
    print(
        f"\n## {label}: target train acc {t['train_accuracy']:.3f}, test acc {t['test_accuracy']:.3f}; "
        f"{refs.get('count')} references in {refs.get('seconds', 0):.1f} s; total {r['seconds_total']:.1f} s"
    )
    print(f"{'attack':<16} {'AUC':>6} {'TPR@0.1%':>9} {'TPR@1%':>7} {'TPR@10%':>8} {'seconds':>8}")
    for name, a in r["attacks"].items():
        f = a["tpr_at_fpr"]
        print(f"{name:<16} {a['auc']:>6.3f} {f['0.001']:>9.3f} {f['0.01']:>7.3f} {f['0.1']:>8.3f} {a['seconds']:>8.1f}")


def speed(ks: list[int], model: str, epochs: int, batch_size: int, seed: int = 0) -> None:
    data = fedleak.data.load("digits")
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    pool, held = perm[:1000], perm[1000:]
    x, y = data.tensors(pool)
    xt, yt = data.tensors(held)
    spec = TrainSpec(epochs=epochs, batch_size=batch_size, lr=0.1, momentum=0.9)
    for vec in (True, False):  # warm up both paths (lazy initialisation, allocator) before timing
        train_references(model, data.spec, x, y, balanced_masks(2, len(x)), TrainSpec(steps=3), vectorised=vec)
    print(
        f"\n## reference training, digits {model}, {epochs} epochs of batch {batch_size} on 500 records each,"
        f" torch threads {torch.get_num_threads()}"
    )
    print(
        f"{'K':>4} {'vectorised m/s':>15} {'sequential m/s':>15} {'ratio':>6} {'acc vec':>8} {'acc seq':>8} "
        f"{'max |dw|':>9}"
    )
    for k in ks:
        masks = balanced_masks(k, len(x), seed=seed)
        row = {}
        for name, vec in (("vec", True), ("seq", False)):
            t0 = time.perf_counter()
            refs = train_references(model, data.spec, x, y, masks, spec, seed=seed, vectorised=vec)
            secs = time.perf_counter() - t0
            acc = (refs.logits(xt).argmax(-1) == yt).float().mean(1)  # (K,) held-out accuracy per model
            row[name] = (k / secs, float(acc.mean()), refs)
        dw = max(float((row["vec"][2].params[n] - row["seq"][2].params[n]).abs().max()) for n in row["vec"][2].params)
        print(
            f"{k:>4} {row['vec'][0]:>15.2f} {row['seq'][0]:>15.2f} {row['vec'][0] / row['seq'][0]:>6.1f} "
            f"{row['vec'][1]:>8.3f} {row['seq'][1]:>8.3f} {dw:>9.1e}",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cifar", type=Path, default=DEFAULT_CIFAR)
    ap.add_argument("--ks", default="4,16,64", help="reference counts for the speed comparison")
    ap.add_argument("--speed-epochs", type=int, default=10)
    ap.add_argument("--speed-model", default="mlp")
    ap.add_argument("--speed-batch", default="32,64", help="batch sizes for the speed comparison")
    ap.add_argument("--cifar-members", type=int, default=1000)
    ap.add_argument("--cifar-population", type=int, default=2000)
    ap.add_argument("--cifar-model", default="convnet:8")
    ap.add_argument("--cifar-epochs", type=int, default=15)
    ap.add_argument("--cifar-references", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-attacks", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-cifar", action="store_true")
    args = ap.parse_args()

    if not args.skip_speed:
        for b in args.speed_batch.split(","):
            speed([int(k) for k in args.ks.split(",")], args.speed_model, args.speed_epochs, int(b))
    if not args.skip_attacks:
        attacks_table(
            "digits, mlp, 500 members, 16 references",
            dataset="digits",
            model="mlp",
            members=500,
            references=16,
            device=args.device,
        )
        attacks_table(
            "breast-cancer, mlp:64, 150 members, 16 references",
            dataset="breast-cancer",
            model="mlp:64",
            members=150,
            references=16,
            epochs=100,
            device=args.device,
        )
    if not args.skip_cifar:
        if not args.cifar.exists():
            print(f"\n## CIFAR-10: skipped ({args.cifar} not found; pass --cifar PATH)")
        else:
            attacks_table(
                f"CIFAR-10, {args.cifar_model}, {args.cifar_members} members, {args.cifar_references} references",
                dataset=f"imagefolder:{args.cifar}",
                model=args.cifar_model,
                members=args.cifar_members,
                population=args.cifar_population,
                references=args.cifar_references,
                epochs=args.cifar_epochs,
                lr=0.05,
                batch_size=128,
                device=args.device,
            )


if __name__ == "__main__":
    main()
