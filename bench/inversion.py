"""Gradient-inversion benchmark: quality and throughput together, batched beside looped in the same process.

For each setting, the targets (the first image of each class) are attacked twice: all updates as one batched
computation (how fedleak runs them), then one update at a time (the obvious loop). It prints median and mean
PSNR, mean SSIM, label accuracy, seconds per attack and the looped/batched time ratio.

    .venv/bin/python bench/inversion.py                                 # all settings, CIFAR-10 + digits
    .venv/bin/python bench/inversion.py --settings idlg,analytic --datasets digits --iterations 50
    .venv/bin/python bench/inversion.py --data /path/cifar10-train-jpeg.tar.gz --no-loop
    .venv/bin/python bench/inversion.py --datasets cifar10 --settings idlg,dlg --device cuda

CIFAR-10 is read from ``--data`` (default ../shared/data/cifar10-train-jpeg.tar.gz); when it is absent the
CIFAR rows are skipped with a note.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

import fedleak
from fedleak.attacks.inversion import imprint_model, invert_batch, with_plan
from fedleak.fl import client_update
from fedleak.metrics import image_scores

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cifar10-train-jpeg.tar.gz"


@dataclass
class Setting:
    attack: str
    model: str
    batch: int = 1
    local_steps: int | None = None
    adam: bool = False  # iteration budget from --ig-iterations
    images: int | None = None  # attack this many images (default: one per class)
    options: dict = field(default_factory=dict)


SETTINGS = {
    "idlg": Setting("idlg", "lenet"),
    "dlg": Setting("dlg", "lenet"),
    "ig": Setting("ig", "convnet", adam=True),
    "ig-b4": Setting("ig", "convnet", batch=4, adam=True, images=8),
    "fedavg": Setting("fedavg", "convnet", batch=4, local_steps=5, adam=True, images=8),
    "analytic": Setting("analytic", "mlp"),
    "imprint": Setting("imprint", "convnet", batch=64, images=64),
}


def first_of_each_class(data: fedleak.data.Dataset) -> list[int]:
    return [int((data.labels == c).nonzero()[0]) for c in range(data.spec.num_classes)]


def targets_for(data: fedleak.data.Dataset, s: Setting, seed: int) -> list[int]:
    firsts = first_of_each_class(data)
    if s.images is None:
        return firsts
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed)).tolist()
    extra = [i for i in perm if i not in firsts]
    return (firsts + extra)[: s.images]


def build_updates(data, s: Setting, idx: list[int], seed: int) -> tuple[list, list[list[int]]]:  # noqa: ANN001
    model_spec = "convnet:16" if s.model == "convnet" and s.attack != "imprint" else s.model
    net = fedleak.models.build(model_spec, data.spec, seed=seed)
    if s.attack == "imprint":
        rest = [i for i in range(len(data)) if i not in set(idx)][:1000]
        net = imprint_model(net, data.spec, bins=512, public=data.inputs(rest), seed=seed)
    groups = [idx[i : i + s.batch] for i in range(0, len(idx), s.batch)]
    updates = []
    for g, group in enumerate(groups):
        u = client_update(
            net,
            data.subset(group),
            local_steps=s.local_steps,
            batch_size=s.batch,
            lr=0.1,
            seed=seed + g,
            client=g,
        )
        updates.append(with_plan(u, net) if s.attack == "imprint" else u)
    return updates, groups


def score(data, groups, recs) -> dict:  # noqa: ANN001
    psnrs, ssims, hits, labelled = [], [], 0, 0
    for group, rec in zip(groups, recs, strict=True):
        sc = image_scores(rec.pixels, data.pixels(group))
        psnrs += sc["psnr"].tolist()
        ssims += sc["ssim"].tolist()
        if rec.labels is not None:
            got = rec.labels[sc["perm"]]
            hits += int((got == data.labels[group]).sum())
            labelled += len(group)
    return {
        "psnr_median": statistics.median(psnrs),
        "psnr_mean": statistics.fmean(psnrs),
        "ssim_mean": statistics.fmean(ssims),
        "label_acc": hits / labelled if labelled else float("nan"),
        "above50": sum(p > 50 for p in psnrs) / len(psnrs),
        "n": len(psnrs),
    }


def run_setting(data, name: str, s: Setting, args) -> dict:  # noqa: ANN001
    idx = targets_for(data, s, args.seed)
    updates, groups = build_updates(data, s, idx, args.seed)
    opts = dict(s.options)
    if s.attack not in ("analytic", "imprint"):
        opts["iterations"] = args.ig_iterations if s.adam else args.iterations
        opts["device"] = args.device
        if s.adam and args.restarts:
            opts["restarts"] = args.restarts
        # warm up (CUDA context and kernels, allocator) so that neither timed path pays for it
        invert_batch(updates[:1], s.attack, seed=args.seed, **{**opts, "iterations": 1})
    t0 = time.perf_counter()
    recs = invert_batch(updates, s.attack, seed=args.seed, **opts)
    batched = time.perf_counter() - t0
    print(f"  ({name}: batched {batched:.1f} s for {len(updates)} updates)", file=sys.stderr, flush=True)
    row = {
        "setting": name,
        "updates": len(updates),
        "batch": s.batch,
        **score(data, groups, recs),
        "s_per_attack": batched / len(updates),
        "batched_s": batched,
    }
    if not args.no_loop and len(updates) > 1 and s.attack not in ("analytic", "imprint"):
        t0 = time.perf_counter()
        looped = [invert_batch([u], s.attack, seed=args.seed, **opts)[0] for u in updates]
        row["looped_s"] = time.perf_counter() - t0
        row["ratio"] = row["looped_s"] / batched
        row["looped_psnr_median"] = score(data, groups, looped)["psnr_median"]
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA), help="CIFAR-10 ImageFolder tarball or folder")
    p.add_argument("--datasets", default="cifar10,digits", help="cifar10 and/or digits")
    p.add_argument("--settings", default=",".join(SETTINGS), help=f"any of {','.join(SETTINGS)}")
    p.add_argument("--iterations", type=int, default=300, help="L-BFGS steps (dlg, idlg)")
    p.add_argument("--ig-iterations", type=int, default=500, help="Adam steps (ig, fedavg)")
    p.add_argument("--restarts", type=int, default=0, help="restarts for ig/fedavg (0: the preset's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--no-loop", action="store_true", help="skip the one-at-a-time comparison")
    p.add_argument("--device", default="cpu", help="where the optimisation attacks run (cpu, cuda)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.settings.split(",") if n.strip()]
    bad = [n for n in names if n not in SETTINGS]
    if bad:
        print(f"unknown setting {bad[0]!r}; choose from {', '.join(SETTINGS)}", file=sys.stderr)
        return 2
    header = (
        f"{'dataset':8} {'setting':9} {'upd':>3} {'B':>3} {'PSNR med':>8} {'mean':>7} {'SSIM':>5} "
        f"{'labels':>6} {'>50dB':>5} {'s/attack':>8} {'loop/batch':>10} {'loop med':>8}"
    )
    print(header, flush=True)
    for ds in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        if ds == "cifar10":
            if not Path(args.data).exists():
                print(f"cifar10: skipped ({args.data} not found; pass --data PATH)", flush=True)
                continue
            data = fedleak.data.load(f"imagefolder:{args.data}")
        else:
            data = fedleak.data.load(ds)
        for name in names:
            r = run_setting(data, name, SETTINGS[name], args)
            ratio = f"{r['ratio']:.2f}x" if "ratio" in r else "-"
            lm = f"{r['looped_psnr_median']:.2f}" if "looped_psnr_median" in r else "-"
            cells = [
                f"{ds:8} {name:9} {r['updates']:>3} {r['batch']:>3}",
                f"{r['psnr_median']:>8.2f} {r['psnr_mean']:>7.2f} {r['ssim_mean']:>5.3f} {r['label_acc']:>6.2f}",
                f"{r['above50']:>5.2f} {r['s_per_attack']:>8.2f} {ratio:>10} {lm:>8}",
            ]
            print(" ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
