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

The rows of issue #15 (``--settings spear,fedsgd,fedavg-grid,loop``) run each case the way ``fedleak invert``
does (``fedleak.audit.invert.run_inversion``: the CLI's seeded choice of targets, its client updates, scoring
and the one rule of "rebuilt"), and print median PSNR, the median trivial baseline (a blank image of the right
colour, or the dataset mean), the fraction rebuilt, the fraction above 50 dB, and wall and CPU seconds:

- ``spear``: ``mlp:1000,act=relu``, FedSGD, B = 4, 8, 16, 32 (``--spear-images`` images, at least one batch);
- ``fedsgd``: B = 4 and 8 (8 images) on DLG's LeNet (idlg, L-BFGS, ``--iterations``) and on ``convnet:16`` in
  train mode (ig, Adam, ``--ig-iterations``);
- ``fedavg-grid``: n = 4 and 16 records per client, E = 1 and 3 local epochs, local batches b = 2 and 4, lr
  ``--local-lr``, on ``lenet`` (DLG's engine, ``families.fedavg_engine``: ``--iterations`` L-BFGS steps, the image
  prior where the update leaves the batch undetermined) and ``convnet:16`` (``--fedavg-iterations`` Adam steps),
  the latter with the BatchNorm prior on and off (``bn_prior``; LeNet has no BatchNorm; "used" is the prior's
  source as the run's results.json reports it); max(n, 8) images per row;
- ``loop``: idlg on the 10 first-of-class targets, batched beside looped (CPU seconds), the first target alone.

    .venv/bin/python bench/inversion.py --datasets cifar10 --settings spear,fedsgd,fedavg-grid,loop --threads 1

``--spear-max-draws N`` bounds spear's draws per batch (0: spear.MAX_DRAWS, the CLI's), ``--grid-models lenet``
keeps only that model's grid rows, ``--jsonl PATH`` appends each row as it finishes. The run reported for #15
(one process, one thread, each stage after the other; the budgets chosen to end within the session):

    B=".venv/bin/python bench/inversion.py --datasets cifar10 --threads 1 --jsonl rows.jsonl"
    OMP_NUM_THREADS=1 timeout 600 $B --settings spear
    OMP_NUM_THREADS=1 timeout 900 $B --settings fedsgd --iterations 100 --ig-iterations 100
    OMP_NUM_THREADS=1 timeout 600 $B --settings fedavg-grid --grid-models lenet --fedavg-iterations 200
    OMP_NUM_THREADS=1 timeout 2000 $B --settings fedavg-grid --grid-models convnet:16 --fedavg-iterations 25
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

import fedleak
import fedleak.attacks.inversion as inv
from fedleak.attacks.inversion import MatchConfig, imprint_model, invert_batch, with_plan
from fedleak.attacks.inversion.families import fedavg_engine
from fedleak.audit.invert import run_inversion
from fedleak.fl import client_update
from fedleak.metrics import image_scores

_spear_leak = inv.spear_leak  # the bench wraps it (per spear row) to print spear's own verdict beside the scores

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


@dataclass(frozen=True)
class Case:
    """One row of the issue's grid, run as ``fedleak invert`` runs it."""

    group: str  # the --settings name that selects it
    model: str
    attack: str
    batch: int  # records per update (FedSGD B; FedAvg n)
    images: int
    budget: str | None  # which flag bounds its iterations: lbfgs, adam, fedavg (None: an exact attack)
    local_epochs: int | None = None
    local_batch: int | None = None
    bn_prior: str | None = None  # None: the attack's default (or no BatchNorm in the model)


def grid(args) -> list[Case]:  # noqa: ANN001
    spear = [(b, max(b, args.spear_images) // b * b) for b in (4, 8, 16, 32)]
    rows = [Case("spear", "mlp:1000,act=relu", "spear", b, n, None) for b, n in spear]
    for b in (4, 8):
        rows.append(Case("fedsgd", "lenet", "idlg", b, 8, "lbfgs"))
        rows.append(Case("fedsgd", "convnet:16", "ig", b, 8, "adam"))
    prior_modes = ("off", "auto") if "bn_prior" in {f.name for f in dataclasses.fields(MatchConfig)} else (None,)
    for model in ("lenet", "convnet:16"):
        for n in (4, 16):
            for epochs in (1, 3):
                for b in (2, 4):
                    for prior in (None,) if model == "lenet" else prior_modes:
                        budget = "lbfgs" if fedavg_engine(model) == "l2" else "fedavg"  # lenet: DLG's engine
                        rows.append(Case("fedavg-grid", model, "fedavg", n, max(n, 8), budget, epochs, b, prior))
    return rows


GRID_GROUPS = ("spear", "fedsgd", "fedavg-grid", "loop")


def run_case(dataset: str, c: Case, args) -> dict:  # noqa: ANN001
    """``fedleak invert`` with the case's options; quality from its results, wall and CPU seconds around it."""
    iterations = {"lbfgs": args.iterations, "adam": args.ig_iterations, "fedavg": args.fedavg_iterations}
    options = {"bn_prior": c.bn_prior} if c.bn_prior is not None else {}
    if c.attack == "spear" and args.spear_max_draws:
        options["max_draws"] = args.spear_max_draws
    told: list[dict] = []  # spear's own verdict per batch (status, directions found, draws): results.json omits it
    if c.attack == "spear":
        inv.spear_leak = lambda u, **kw: _told(told, _spear_leak(u, **kw))
    t0, c0 = time.perf_counter(), time.process_time()
    r = run_inversion(
        dataset=dataset,
        model=c.model,
        attack=c.attack,
        num_images=c.images,
        batch_size=c.batch,
        iterations=iterations.get(c.budget) if c.budget else None,
        local_epochs=c.local_epochs,
        local_batch_size=c.local_batch,
        local_lr=args.local_lr,
        seed=args.seed,
        device=args.device,
        options=options or None,
        echo=lambda _: None,
    )
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    inv.spear_leak = _spear_leak
    s = r["summary"]
    return {
        "updates": r["updates"],
        "psnr_median": s["psnr_median"],
        "baseline": s["baseline_psnr_median"],
        "rebuilt": s["rebuilt_fraction"],
        "above50": s["recovered_above_50db"],
        "n": len(r["targets"]),
        "attack_s": s["seconds_total"] / r["updates"],
        "wall": wall,
        "cpu": cpu,
        "bn_reported": r.get("bn_prior"),
        "steps": r.get("local_steps"),
        "budget": iterations.get(c.budget) if c.budget else None,
        "spear": [{k: e[k] for k in ("status", "rank", "found", "draws")} for e in told] or None,
    }


def _told(store: list[dict], rec):  # noqa: ANN001, ANN202
    store.append(rec.extras)
    return rec


def print_grid(dataset: str, groups: list[str], args) -> None:  # noqa: ANN001
    models = {m.strip() for m in args.grid_models.split(",") if m.strip()}
    chosen = (c for c in grid(args) if c.group in groups and (not models or c.model in models))
    rows = sorted(chosen, key=lambda c: groups.index(c.group))  # in the order asked
    if "fedavg-grid" in groups and all(c.bn_prior is None for c in grid(args)):  # LeNet rows alone have none
        print("note: MatchConfig has no bn_prior option in this tree: the FedAvg rows run without the BN prior switch")
    budgets = f"L-BFGS {args.iterations}, ig Adam {args.ig_iterations}, fedavg Adam {args.fedavg_iterations}"
    print(f"\n{dataset}: cases as fedleak invert runs them (seed {args.seed}; {budgets}; local lr {args.local_lr})")
    print(
        f"{'case':10} {'model':18} {'attack':6} {'B/n':>3} {'E':>2} {'b':>2} {'steps':>5} {'prior':>5} {'imgs':>4} "
        f"{'budget':>6} {'PSNR med':>8} {'blank':>6} {'rebuilt':>7} {'>50dB':>5} {'s/update':>8} "
        f"{'wall s':>7} {'CPU s':>7} used",
        flush=True,
    )
    for c in rows:
        r = run_case(dataset, c, args)
        if args.jsonl:  # each row as it finishes: a run cut short still leaves its rows
            with open(args.jsonl, "a") as fh:
                fh.write(json.dumps({"dataset": dataset, **dataclasses.asdict(c), **r}) + "\n")
        prior = c.bn_prior or "-"
        cells = [
            f"{c.group:10} {c.model:18} {c.attack:6} {c.batch:>3} {c.local_epochs or '-':>2} {c.local_batch or '-':>2}",
            f"{r['steps'] or '-':>5} {prior:>5} {r['n']:>4} {r['budget'] or '-':>6} {r['psnr_median']:>8.2f}",
            f"{r['baseline']:>6.2f}",
            f"{r['rebuilt']:>7.2f} {r['above50']:>5.2f} {r['attack_s']:>8.2f} {r['wall']:>7.1f} {r['cpu']:>7.1f}",
            str(r["bn_reported"] or "-"),
        ]
        if r["spear"]:
            verdicts = ", ".join(f"{e['status']} {e['found']}/{e['rank']} after {e['draws']} draws" for e in r["spear"])
            cells.append(f"spear: {verdicts}")
        print(" ".join(cells), flush=True)
    if "loop" in groups:
        print_loop(dataset, args)


def print_loop(dataset: str, args) -> None:  # noqa: ANN001
    """idlg on the 10 first-of-class targets (one lenet, as fedleak invert builds it): all at once, then one after
    another; CPU seconds per target and the first target alone."""
    data = fedleak.data.load(dataset)
    s = SETTINGS["idlg"]
    idx = targets_for(data, s, args.seed)
    updates, groups = build_updates(data, s, idx, args.seed)
    opts = {"iterations": args.iterations, "seed": args.seed, "device": args.device}
    c0 = time.process_time()
    recs = invert_batch(updates, "idlg", **opts)
    batched = time.process_time() - c0
    looped, costs = [], []
    for u in updates:
        c0 = time.process_time()
        looped += invert_batch([u], "idlg", **opts)
        costs.append(time.process_time() - c0)
    b, lo = score(data, groups, recs), score(data, groups, looped)
    n = len(updates)
    print(f"\nloop: idlg, lenet, {n} targets (first of each class), {args.iterations} L-BFGS steps, CPU seconds")
    print(f"  batched x{n}: {batched / n:.2f} per target ({batched:.1f} in all), PSNR median {b['psnr_median']:.2f}")
    print(
        f"  looped  x{n}: {sum(costs) / n:.2f} per target ({sum(costs):.1f} in all), PSNR median "
        f"{lo['psnr_median']:.2f}; looped / batched {sum(costs) / batched:.2f}x"
    )
    print(
        f"  one target ({idx[0]}) alone: {costs[0]:.2f} CPU-s; per-target alone: {', '.join(f'{c:.1f}' for c in costs)}"
    )


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
    p.add_argument("--settings", default=",".join(SETTINGS), help=f"any of {','.join([*SETTINGS, *GRID_GROUPS])}")
    p.add_argument("--iterations", type=int, default=300, help="L-BFGS steps (dlg, idlg)")
    p.add_argument("--ig-iterations", type=int, default=500, help="Adam steps (ig, fedavg)")
    p.add_argument("--restarts", type=int, default=0, help="restarts for ig/fedavg (0: the preset's)")
    p.add_argument("--fedavg-iterations", type=int, default=200, help="Adam steps of the fedavg-grid rows")
    p.add_argument("--local-lr", type=float, default=0.01, help="clients' local learning rate (fedavg-grid)")
    p.add_argument("--spear-images", type=int, default=16, help="images per spear row (at least one batch)")
    p.add_argument("--spear-max-draws", type=int, default=0, help="spear's budget of unit subsets (0: spear's own)")
    p.add_argument("--grid-models", default="", help="only the grid rows on these models (e.g. lenet; '': all)")
    p.add_argument("--jsonl", default="", help="append each grid row to this file as it finishes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--no-loop", action="store_true", help="skip the one-at-a-time comparison")
    p.add_argument("--device", default="cpu", help="where the optimisation attacks run (cpu, cuda)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.settings.split(",") if n.strip()]
    bad = [n for n in names if n not in SETTINGS and n not in GRID_GROUPS]
    if bad:
        print(f"unknown setting {bad[0]!r}; choose from {', '.join([*SETTINGS, *GRID_GROUPS])}", file=sys.stderr)
        return 2
    grid_names = [n for n in names if n in GRID_GROUPS]
    names = [n for n in names if n in SETTINGS]
    header = (
        f"{'dataset':8} {'setting':9} {'upd':>3} {'B':>3} {'PSNR med':>8} {'mean':>7} {'SSIM':>5} "
        f"{'labels':>6} {'>50dB':>5} {'s/attack':>8} {'loop/batch':>10} {'loop med':>8}"
    )
    for ds in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        if ds == "cifar10":
            if not Path(args.data).exists():
                print(f"cifar10: skipped ({args.data} not found; pass --data PATH)", flush=True)
                continue
            spec = f"imagefolder:{args.data}"
        else:
            spec = ds
        if grid_names:
            print_grid(spec, grid_names, args)
        if not names:
            continue
        data = fedleak.data.load(spec)
        print(header, flush=True)
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
