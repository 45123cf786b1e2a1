"""Inverting Gradients settings per model family, chosen on measured runs (issue #15, item 5).

For each model family fedleak builds, the ``ig`` attack (cosine distance, signed Adam with x0.1 decay at 3/8, 5/8,
7/8, box constraint, one restart) is run on FedSGD updates of B = 1 (the first image of classes 0..3, one update
each, attacked together) under a grid of total-variation weights, learning rates and starts, and the best cell is
chosen by the targets rebuilt (the one rule), then median PSNR, then mean SSIM. Today's preset (TV 1e-4, lr 0.1,
start normal) is one cell of the grid, so every chosen row is printed beside it. The chosen row is then run once
more at B = 4 (the four targets in one update, labels counted from the last layer, reconstructions matched to
originals), beside today's preset at B = 4 where the two differ.

Coarse to fine, so that the whole sweep stays within a bounded budget on one core:

1. tv x lr at the default start (``normal``): the full 5 x 3 grid where one cell costs at most ``--full-grid-s``
   CPU-seconds (estimated from a 5-step probe); otherwise a coordinate search: TV in {0, 1e-4, 1e-2} at lr 0.1,
   then the finer TV values (1e-5, 1e-3) next to the best, then lr 0.03 and 0.3 at the best TV;
2. the starts ``uniform`` and ``mean`` at the best tv / lr;
3. B = 4 for the chosen row (and today's, where it differs);
4. the chosen row and today's again at ``--confirm-iterations`` (the preset's 2000 steps) where both cost at most
   ``--max-confirm-s``: does the choice still win at the budget it would be used at?

Families marked optional (``resnet20``) run only where one cell costs less than ``--max-cell-s`` (the probe says).
``--local-steps S`` attacks FedAvg updates instead (S local SGD steps of batch 1 at lr 0.01, the ``fedavg``
preset: the same settings matched through a replay of the local training). Every cell is appended to ``--log``
(JSON lines) as it ends; a rerun with the same log skips the cells already in it, and ``--table-only`` prints the
tables from the log.

    OMP_NUM_THREADS=1 .venv/bin/python bench/ig_presets.py                                   # everything
    OMP_NUM_THREADS=1 .venv/bin/python bench/ig_presets.py --datasets cifar10 --families convnet:bn --iterations 100
    .venv/bin/python bench/ig_presets.py --table-only --log /tmp/ig_presets.jsonl

Each row: median PSNR and mean SSIM over the targets, the median trivial baseline (the better of a flat image of
the target's own colour and the format's mean colour), how many targets are rebuilt by the one rule
(``fedleak.metrics.image.is_rebuilt``), label accuracy, CPU-seconds of the cell.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

import fedleak
from fedleak.attacks.inversion import invert_batch
from fedleak.fl import client_update
from fedleak.metrics import image_scores
from fedleak.metrics.image import is_rebuilt, trivial_baselines

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cifar10-train-jpeg.tar.gz"

# family -> (model spec attacked, optional: run only where a cell is cheap enough)
FAMILIES: dict[str, tuple[str, bool]] = {
    "lenet": ("lenet", False),
    "lenet:normalised": ("lenet:input=normalised", False),
    "convnet:bn": ("convnet:16", False),
    "convnet:gn": ("convnet:16,norm=gn", False),
    "mlp": ("mlp", False),
    "resnet20:bn": ("resnet20", True),
}
TVS = (0.0, 1e-5, 1e-4, 1e-3, 1e-2)
COARSE_TVS = (0.0, 1e-4, 1e-2)
LRS = (0.03, 0.1, 0.3)
STARTS = ("normal", "uniform", "mean")
TODAY = {"tv": 1e-4, "lr": 0.1, "start": "normal"}  # the ig preset's constants before this sweep


def rank(row: dict) -> tuple:
    """How cells are compared: targets rebuilt (the one rule) first, then median PSNR, then mean SSIM."""
    return (row["rebuilt"], row["psnr_median"], row["ssim_mean"])


@dataclass(frozen=True)
class Cell:
    dataset: str
    family: str
    tv: float
    lr: float
    start: str
    batch: int
    iterations: int
    targets: int
    local_steps: int = 0  # 0: FedSGD (ig); S: FedAvg updates of S local SGD steps of batch 1, lr 0.01 (fedavg)

    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def first_of_classes(data: fedleak.data.Dataset, k: int) -> list[int]:
    return [int((data.labels == c).nonzero()[0]) for c in range(k)]


class Sweep:
    def __init__(self, dataset: str, data: fedleak.data.Dataset, args: argparse.Namespace, log: dict) -> None:
        self.dataset, self.data, self.args, self.log = dataset, data, args, log
        self.idx = first_of_classes(data, args.targets)

    def updates(self, family: str, batch: int) -> tuple[list, list[list[int]]]:
        net = fedleak.models.build(FAMILIES[family][0], self.data.spec, seed=self.args.seed)
        groups = [self.idx[i : i + batch] for i in range(0, len(self.idx), batch)]
        steps = self.args.local_steps or None  # FedAvg: S local steps of batch 1 at lr 0.01
        fedavg = {"local_steps": steps, "batch_size": 1, "lr": 0.01} if steps else {}
        ups = [client_update(net, self.data.subset(g), seed=self.args.seed, **fedavg) for g in groups]  # train mode
        return ups, groups

    def run(self, family: str, tv: float, lr: float, start: str, batch: int = 1, iterations: int = 0) -> dict:
        steps = iterations or self.args.iterations
        cell = Cell(self.dataset, family, tv, lr, start, batch, steps, len(self.idx), self.args.local_steps)
        if cell.key() not in self.log:  # another run on the same log may have measured it meanwhile
            self.log.update(read_log(self.args.log))
        if cell.key() in self.log:
            return self.log[cell.key()]
        ups, groups = self.updates(family, batch)
        opts = {"tv": tv, "lr": lr, "start": start, "iterations": cell.iterations, "restarts": 1}
        t0 = time.process_time()
        recs = invert_batch(ups, "fedavg" if cell.local_steps else "ig", seed=self.args.seed, **opts)
        cpu = time.process_time() - t0
        psnrs, ssims, bases, rebuilt, hits = [], [], [], 0, 0
        mean = torch.tensor(self.data.spec.mean).view(-1, 1, 1)
        for g, rec in zip(groups, recs, strict=True):
            orig = self.data.pixels(g)
            sc = image_scores(rec.pixels, orig)
            base = trivial_baselines(orig, mean)
            hits += int((rec.labels[sc["perm"]] == self.data.labels[g]).sum())
            for p, s, b in zip(sc["psnr"].tolist(), sc["ssim"].tolist(), base.tolist(), strict=True):
                psnrs.append(p), ssims.append(s), bases.append(b)
                rebuilt += is_rebuilt(p, s, b)
        row = {
            **asdict(cell),
            "psnr": psnrs,
            "psnr_median": statistics.median(psnrs),
            "ssim_mean": statistics.fmean(ssims),
            "baseline_median": statistics.median(bases),
            "rebuilt": rebuilt,
            "label_acc": hits / len(psnrs),
            "cpu_s": cpu,
        }
        self.log[cell.key()] = row
        with open(self.args.log, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(line(row), flush=True)
        return row

    def probe_cell_s(self, family: str) -> float:
        """CPU-seconds one cell would cost: the setup and first step (a 1-step run) plus the other steps at the cost
        of one more (the difference between a 6-step and a 1-step run, over 5)."""
        ups, _ = self.updates(family, 1)
        invert_batch(ups[:1], "ig", iterations=1)  # warm up
        spent = []
        for steps in (1, 6):
            t0 = time.process_time()
            invert_batch(ups, "ig", iterations=steps, restarts=1)
            spent.append(time.process_time() - t0)
        return spent[0] + max(spent[1] - spent[0], 0.0) / 5 * (self.args.iterations - 1)

    def family(self, family: str) -> dict | None:
        est = self.probe_cell_s(family)
        if FAMILIES[family][1] and est > self.args.max_cell_s:
            cap = self.args.max_cell_s
            print(f"# {self.dataset} {family}: skipped, one cell would cost ~{est:.0f} CPU-s (> {cap:g})", flush=True)
            return None
        full = est <= self.args.full_grid_s
        how = "full tv x lr grid" if full else "coordinate search"
        print(f"# {self.dataset} {family}: ~{est:.0f} CPU-s a cell, {how}", flush=True)
        best = lambda rows: max(rows, key=rank)  # noqa: E731
        if full:
            rows = [self.run(family, tv, lr, "normal") for lr in LRS for tv in TVS]
        else:
            rows = [self.run(family, tv, 0.1, "normal") for tv in COARSE_TVS]
            tv = best(rows)["tv"]
            finer = {0.0: [1e-5], 1e-4: [1e-5, 1e-3], 1e-2: [1e-3]}[tv]
            rows += [self.run(family, t, 0.1, "normal") for t in finer]
            tv = best(rows)["tv"]
            rows += [self.run(family, tv, lr, "normal") for lr in LRS if lr != 0.1]
        top = best(rows)
        rows += [self.run(family, top["tv"], top["lr"], s) for s in STARTS if s != "normal"]
        chosen = best(rows)
        b4 = self.run(family, chosen["tv"], chosen["lr"], chosen["start"], batch=len(self.idx))
        today = self.run(family, **TODAY)
        same = all(chosen[k] == v for k, v in TODAY.items())
        today_b4 = b4 if same else self.run(family, **TODAY, batch=len(self.idx))
        out = {"chosen": chosen, "today": today, "b4": b4, "today_b4": today_b4}
        steps = self.args.confirm_iterations
        cost = 2 * est * steps / self.args.iterations
        if steps and not same and cost <= self.args.max_confirm_s:  # does the choice hold at the longer budget?
            out["confirm"] = self.run(family, chosen["tv"], chosen["lr"], chosen["start"], iterations=steps)
            out["confirm_today"] = self.run(family, **TODAY, iterations=steps)
        elif steps and not same:
            cap = self.args.max_confirm_s
            print(
                f"# {self.dataset} {family}: not confirmed at {steps} steps (~{cost:.0f} CPU-s > {cap:g})", flush=True
            )
        return out


HEADER = (
    f"{'dataset':8} {'family':16} {'B':>2} {'steps':>5} {'tv':>6} {'lr':>5} {'start':7} {'PSNR med':>8} "
    f"{'SSIM':>5} {'base':>5} {'rebuilt':>7} {'labels':>6} {'CPU-s':>6}  per-target PSNR"
)


def line(r: dict) -> str:
    per = " ".join(f"{p:.1f}" for p in r["psnr"])
    fam = f"{r['family']} S={r['local_steps']}" if r.get("local_steps") else r["family"]
    return (
        f"{r['dataset']:8} {fam:16} {r['batch']:>2} {r['iterations']:>5} {r['tv']:>6g} {r['lr']:>5g} "
        f"{r['start']:7} {r['psnr_median']:>8.2f} {r['ssim_mean']:>5.3f} {r['baseline_median']:>5.1f} "
        f"{r['rebuilt']:>3}/{r['targets']:<3} {r['label_acc']:>6.2f} {r['cpu_s']:>6.0f}  {per}"
    )


def read_log(path: str) -> dict:
    out: dict = {}
    if Path(path).exists():
        for text in Path(path).read_text().splitlines():
            if text.strip():
                row = json.loads(text)
                row.setdefault("local_steps", 0)
                out[Cell(**{k: row[k] for k in Cell.__dataclass_fields__}).key()] = row
    return out


def chosen_table(log: dict) -> None:
    """Per (dataset, family): the best B = 1 cell of its sweep beside today's preset (median PSNR, how many of the
    same targets it beats today's on, targets rebuilt), both at B = 4, and both at any longer budget run."""
    groups: dict[tuple, list[dict]] = {}
    for r in log.values():
        groups.setdefault((r["dataset"], r["family"], r["local_steps"]), []).append(r)
    print("\nchosen per family: the best B = 1 cell by (rebuilt, median PSNR, mean SSIM), beside today's preset")
    print(
        f"{'dataset':8} {'family':16} {'steps':>5} {'cells':>5} {'tv':>6} {'lr':>5} {'start':7} {'B=1 med':>7} "
        f"{'today':>6} {'gain':>6} {'up':>4} {'rebuilt':>7} {'base':>5} {'B=4 med':>7} {'today':>6}"
    )
    f = lambda r: f"{r['psnr_median']:.2f}" if r else "-"  # noqa: E731
    settings = lambda r: (r["tv"], r["lr"], r["start"])  # noqa: E731
    for (ds, fam, local), rows in sorted(groups.items()):
        fam = f"{fam} S={local}" if local else fam
        b1 = [r for r in rows if r["batch"] == 1]
        if not b1:
            continue
        per_steps: dict[int, dict] = {}
        for r in b1:
            per_steps.setdefault(r["iterations"], {})[settings(r)] = r
        sweep = max(per_steps, key=lambda k: len(per_steps[k]))  # the budget the grid ran at
        c = max(per_steps[sweep].values(), key=rank)
        b4 = {(r["iterations"], *settings(r)): r for r in rows if r["batch"] > 1}
        for steps in sorted(per_steps, key=lambda k: (k != sweep, k)):
            ci, ti = per_steps[steps].get(settings(c)), per_steps[steps].get(tuple(TODAY.values()))
            if ci is None:
                continue
            gain = f"{ci['psnr_median'] - ti['psnr_median']:+.2f}" if ti else "-"
            up = f"{sum(a > b for a, b in zip(ci['psnr'], ti['psnr'], strict=True))}/{ci['targets']}" if ti else "-"
            c4, t4 = b4.get((steps, *settings(c))), b4.get((steps, *TODAY.values()))
            print(
                f"{ds:8} {fam:16} {steps:>5} {len(per_steps[steps]):>5} {c['tv']:>6g} {c['lr']:>5g} {c['start']:7} "
                f"{ci['psnr_median']:>7.2f} {f(ti):>6} {gain:>6} {up:>4} {ci['rebuilt']:>3}/{ci['targets']:<3} "
                f"{ci['baseline_median']:>5.1f} {f(c4):>7} {f(t4):>6}"
            )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA), help="CIFAR-10 ImageFolder tarball or folder")
    p.add_argument("--datasets", default="cifar10,digits", help="cifar10 and/or digits")
    p.add_argument("--families", default=",".join(FAMILIES), help=f"any of {','.join(FAMILIES)}")
    p.add_argument("--iterations", type=int, default=200, help="Adam steps per attack")
    p.add_argument("--targets", type=int, default=4, help="first image of classes 0..targets-1")
    p.add_argument("--full-grid-s", type=float, default=30.0, help="cells this cheap get the full tv x lr grid")
    p.add_argument("--max-cell-s", type=float, default=120.0, help="optional families: skip above this")
    p.add_argument("--confirm-iterations", type=int, default=2000, help="the choice and today's again (0: never)")
    p.add_argument("--max-confirm-s", type=float, default=300.0, help="confirm only where both cost at most this")
    p.add_argument("--extra", default="", help="only these cells, e.g. '0,0.1,mean;1e-5,0.3,normal'")
    p.add_argument("--extra-batch", type=int, default=1, help="--extra cells at this B (the targets in B-size updates)")
    p.add_argument("--local-steps", type=int, default=0, help="FedAvg updates of S local steps (attack fedavg)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--log", default=str(Path(tempfile.gettempdir()) / "ig_presets.jsonl"), help="JSON lines, a cell each"
    )
    p.add_argument("--table-only", action="store_true", help="print the tables from --log and stop")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    log = read_log(args.log)
    if args.table_only:
        print(HEADER)
        for r in sorted(log.values(), key=lambda r: (r["dataset"], r["family"], r["batch"], r["iterations"])):
            print(line(r))
        chosen_table(log)
        return 0
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    bad = [f for f in families if f not in FAMILIES]
    if bad:
        print(f"unknown family {bad[0]!r}; choose from {', '.join(FAMILIES)}", file=sys.stderr)
        return 2
    extra = [tuple(c.split(",")) for c in args.extra.split(";") if c.strip()]
    if any(len(c) != 3 or c[2] not in STARTS for c in extra):
        print(f"--extra {args.extra!r}: cells 'tv,lr,start' separated by ';'", file=sys.stderr)
        return 2
    print(HEADER, flush=True)
    for ds in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        if ds == "cifar10":
            if not Path(args.data).exists():
                print(f"# cifar10: skipped ({args.data} not found; pass --data PATH)", flush=True)
                continue
            data = fedleak.data.load(f"imagefolder:{args.data}")
        else:
            data = fedleak.data.load(ds)
        sweep = Sweep(ds, data, args, log)
        for fam in families:
            if extra:  # cross-checks: one dataset's choice on the other, beside today's
                for tv, lr, start in [*extra, tuple(TODAY.values())]:
                    sweep.run(fam, float(tv), float(lr), str(start), batch=args.extra_batch)
            else:
                sweep.family(fam)
    chosen_table(log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
