"""Membership-inference benchmark: every attack's AUC, TPR at 0.1% / 1% FPR and seconds, and reference models
trained vectorised vs one after another (models per second, the ratio, and each path's accuracy per model).

    python bench/mia.py [--cifar PATH] [--ks 4,16,64] [--skip-attacks] [--skip-speed] [--skip-cifar]
                        [--tabular SPEC] [--tabular-seeds 0,1,2] [--skip-tabular]
                        [--art-python /tmp/artvenv/bin/python]
                        [--rmia-choices 0,1] [--federation 0,1] [--only-federation]
                        [--skip-cost] [--no-location-shape] [--mia-all [--baseline-src DIR]] [--only-speed]

Cost of reference models (the issue's target: at least 3x one-after-another at K = 16, and at most what ML Privacy
Meter pays per model): the section "reference models of the tabular protocol" trains the protocol's 16 reference
models (784-128 MLP, 2,505 records each, 50 epochs of batch 64) with the vectorised trainer and one after another,
alternating in the same process (twice; one after another on 4 of the 16 models per run, as its cost per model
does not depend on K; each path's best run counts), and prints CPU-s per model, the ratio, each path's
accuracy, the largest weight difference, and the floor: the trainer's own batched matmuls alone, timed here at
its shapes; then the same on a random table of Location's shape (446 binary features, 30 classes), cost only;
then, on that shape, fedleak's vectorised trainer beside a loop written like ML Privacy Meter's trainer at
fedleak's work (2,000 steps of 64) and at ML Privacy Meter's tabular default (``configs/purchase.yaml``: 100
epochs of batch 256, 1,000 steps). ``--mia-all`` times the whole ``fedleak mia --attack all`` command on the
tabular protocol, vectorised beside ``--sequential`` (and ``--baseline-src`` an older checkout's ``src``, e.g.
from ``git worktree add``), with each run's AUCs.

``--rmia-choices`` sweeps RMIA's tuning choices on the tabular protocol (the figures of the rmia module's
docstring); ``--federation`` attacks each client of a digits federation from every round's updates beside the
final model (the figures of ``federation_scores``); ``--only-federation`` stops after those two sections.

Settings: digits/mlp (500 members, 16 references), breast-cancer/mlp (150 members) and, when the CIFAR-10
tarball is there, CIFAR-10 with convnet (a modest member count so that it runs in minutes on 2 cores).
The slow and the fast reference trainers run in the same process, on the same masks, alternating, and each
path's time is the best of ``--speed-repeats`` runs, so the ratio holds on a noisy machine.

The tabular section runs the protocol of the classic tabular benchmark (Shokri et al.'s Location data as ML
Privacy Meter and ART run it: an MLP with 128 hidden units fitted to 100% on 1,000 members, 1,000 non-members,
3,010 population records; LiRA and RMIA online with 16 reference models, a loss threshold, Shokri's attack with
4 shadow models) on any labelled table or image dataset spec, and prints fedleak's figures next to the figures
published for Location on the project's machine (issue 4). Location itself is not bundled (no download here);
give it as ``--tabular csv:location.csv?label=NAME`` (NAME: the class column). The default is the 10,000
MNIST test digits (784 features, 10 classes; the protocol draws its 5,010 records from them, the rest is
unused), real data that works offline: its figures are not the Location figures, only the same protocol.
With ``--art-python`` (a Python with adversarial-robustness-toolbox and scikit-learn, no torch) the same split
and target go to ``bench/art_shadow.py``: ART's ShadowModels (4 shadows) and MembershipInferenceBlackBox
(random forest) on the same work as fedleak's Shokri attack. ``--tabular-seeds 0,1,2`` runs the protocol once
per seed (its own split, target and models) and ends with the AUCs by seed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import fedleak
from fedleak.attacks.membership import balanced_masks, train_references
from fedleak.audit.mia import run_mia, split_membership
from fedleak.fl import TrainSpec

HERE = Path(__file__).resolve().parent
DEFAULT_CIFAR = HERE.parent.parent / "shared" / "data" / "cifar10-train-jpeg.tar.gz"
DEFAULT_TABULAR = f"mnist:{HERE.parent.parent / 'shared' / 'data' / 'mnist-test'}"

# Issue 4: measured on the project's machine on Shokri et al.'s Location data (5,010 records, 446 binary
# features, 30 classes; MLP 446-128-30 fitted to 100% on 1,000 members; 1,000 non-members; 3,010 population
# records). (AUC, TPR at 1% FPR, TPR at 0.1% FPR); None where the issue gives no figure.
PUBLISHED_LOCATION = {
    "lira": ("ML Privacy Meter LiRA online, 16 refs", (0.990, 0.80, 0.65)),
    "rmia": ("ML Privacy Meter RMIA online, 16 refs", (0.992, 0.85, None)),
    "loss": ("loss threshold", (0.92, 0.02, None)),
    "shokri": ("ART shadow models, 4 shadows, RF", (0.87, None, None)),
}
PUBLISHED_SECONDS_PER_REFERENCE = 1.2  # one after another


def attacks_table(label: str, **options: object) -> None:
    progress = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731  (survives a timeout)
    r = run_mia(attack="all", echo=progress, **options)  # type: ignore[arg-type]
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


def speed(ks: list[int], model: str, epochs: int, batch_size: int, seed: int = 0, repeats: int = 3) -> None:
    data = fedleak.data.load("digits")
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    pool, held = perm[:1000], perm[1000:]
    x, y = data.tensors(pool)
    xt, yt = data.tensors(held)
    spec = TrainSpec(epochs=epochs, batch_size=batch_size, lr=0.1, momentum=0.9)
    for vec in (True, False):  # warm up both paths (lazy initialisation, allocator) before timing
        train_references(model, data.spec, x, y, balanced_masks(2, len(x)), TrainSpec(steps=3), vectorised=vec)
    steps = epochs * math.ceil(500 / batch_size)  # SGD steps per model (500 records each)
    print(
        f"\n## reference training, digits {model}, {epochs} epochs of batch {batch_size} on 500 records each"
        f" ({steps} steps), torch threads {torch.get_num_threads()}, best of {repeats} runs per path;"
        " ms/step: milliseconds per SGD step per model"
    )
    print(
        f"{'K':>4} {'vectorised m/s':>15} {'sequential m/s':>15} {'ratio':>6} {'vec ms/step':>12} "
        f"{'seq ms/step':>12} {'acc vec':>8} {'acc seq':>8} {'max |dw|':>9}"
    )
    for k in ks:
        masks = balanced_masks(k, len(x), seed=seed)
        best = {"vec": math.inf, "seq": math.inf}
        row = {}
        for _ in range(max(1, repeats)):  # alternate the paths so that both see the same load
            for name, vec in (("vec", True), ("seq", False)):
                t0 = time.perf_counter()
                refs = train_references(model, data.spec, x, y, masks, spec, seed=seed, vectorised=vec)
                best[name] = min(best[name], time.perf_counter() - t0)
                row[name] = refs
        acc = {n: float((r.logits(xt).argmax(-1) == yt).float().mean(1).mean()) for n, r in row.items()}
        dw = max(float((row["vec"].params[n] - row["seq"].params[n]).abs().max()) for n in row["vec"].params)
        ms = {n: 1e3 * best[n] / (k * steps) for n in best}  # per model and SGD step
        print(
            f"{k:>4} {k / best['vec']:>15.2f} {k / best['seq']:>15.2f} {best['seq'] / best['vec']:>6.1f} "
            f"{ms['vec']:>12.3f} {ms['seq']:>12.3f} {acc['vec']:>8.3f} {acc['seq']:>8.3f} {dw:>9.1e}",
            flush=True,
        )


def _matmul_floor(x: torch.Tensor, shapes: list[torch.Size], k: int, batch: int, steps: int) -> tuple[float, float]:
    """CPU seconds per model of the dense matmuls alone (every layer's forward and weight gradient, and the
    gradient sent down from every layer above the first), each timed here as the batched matmul the trainer
    runs, at its real shapes (the first layer on the input columns that vary over the pool), and the GFLOP/s
    they ran at."""
    width = int((~(x.flatten(1) == x.flatten(1)[:1]).all(0)).sum())
    seconds = flops = 0.0
    for i, (o, n) in enumerate(shapes):
        n = width if i == 0 else n
        a, w, d, g = torch.randn(k, batch, n), torch.randn(k, o, n), torch.randn(k, batch, o), torch.randn(k, o, n)
        calls = [
            lambda a=a, w=w: torch.bmm(a, w.transpose(1, 2)),
            lambda a=a, d=d, g=g: g.baddbmm_(d.transpose(1, 2), a, beta=0.9),
        ]
        if i > 0:
            calls.append(lambda d=d, w=w: torch.bmm(d, w))
        for call in calls:
            for _ in range(3):
                call()
            reps = 20
            c0 = time.process_time()
            for _ in range(reps):
                call()
            seconds += (time.process_time() - c0) / reps * steps / k
            flops += 2 * k * batch * n * o * steps / k
    return seconds, flops / seconds / 1e9


def reference_cost(
    label: str,
    data_spec: object,
    x: torch.Tensor,
    y: torch.Tensor,
    x_test: torch.Tensor | None,
    y_test: torch.Tensor | None,
    model: str,
    train_spec: TrainSpec,
    references: int,
    seed: int = 0,
    repeats: int = 2,
    sequential_models: int = 4,
) -> dict[str, float]:
    """K reference models on the pool (x, y), with the masks and seeds LiRA/RMIA's context uses, by the
    vectorised trainer (all K) and one after another (``sequential_models`` of the same K models per run: one
    after another costs the same per model whatever K is), alternating ``repeats`` times in this process so that
    both paths see the same load; each path's best run counts. Prints CPU and wall seconds per model, the
    ratio, each path's mean accuracy on (x_test, y_test) (when given), the largest weight difference between
    the same models from the two paths, and the floor: the dense matmuls alone, timed here at the trainer's
    shapes."""
    masks = balanced_masks(references, len(x), seed=seed + 1)  # as MembershipContext._train_set
    for vec in (True, False):  # warm both paths up (lazy initialisation, allocator)
        train_references(model, data_spec, x, y, masks[:2], TrainSpec(steps=3), vectorised=vec)
    runs: dict[str, list[tuple[float, float]]] = {"vectorised": [], "one after another": []}
    vec_refs, seq_parts = None, []
    for r in range(max(1, repeats)):
        c0, t0 = time.process_time(), time.perf_counter()
        vec_refs = train_references(model, data_spec, x, y, masks, train_spec, seed=seed)
        runs["vectorised"].append(((time.process_time() - c0) / references, (time.perf_counter() - t0) / references))
        a = (r * sequential_models) % references
        part = masks[a : a + sequential_models]
        c0, t0 = time.process_time(), time.perf_counter()
        seq = train_references(model, data_spec, x, y, part, train_spec, seed=seed, vectorised=False, first=a)
        n = len(part)
        runs["one after another"].append(((time.process_time() - c0) / n, (time.perf_counter() - t0) / n))
        seq_parts.append((a, seq))
    best = {name: min(v) for name, v in runs.items()}
    acc = {"vectorised": None, "one after another": None}
    if x_test is not None:
        acc["vectorised"] = float((vec_refs.logits(x_test).argmax(-1) == y_test).float().mean())
        acc["one after another"] = sum(
            float((s.logits(x_test).argmax(-1) == y_test).float().mean()) * s.count for _, s in seq_parts
        ) / sum(s.count for _, s in seq_parts)
    dw = max(
        float((vec_refs.params[n][a : a + s.count] - s.params[n]).abs().max()) for a, s in seq_parts for n in s.params
    )
    shapes = [t.shape[1:] for n, t in vec_refs.params.items() if n.endswith("weight")]
    n_own = int(masks[0].sum())
    steps = train_spec.epochs * math.ceil(n_own / train_spec.batch_size)
    floor, rate = _matmul_floor(x, shapes, references, train_spec.batch_size, steps)
    print(
        f"\n## reference models of {label}: {model}, K={references}, {n_own} records each, {train_spec.epochs} epochs"
        f" of batch {train_spec.batch_size} ({steps} steps), torch threads {torch.get_num_threads()}; {repeats} runs"
        f" per path, alternating (one after another: {sequential_models} of the K models per run)"
    )
    print(f"{'trainer':<20} {'CPU-s/model':>11} {'wall s/model':>12} {'test acc':>9}   runs (CPU-s/model)")
    for name, v in runs.items():
        shown = f"{'-':>9}" if acc[name] is None else f"{acc[name]:>9.3f}"
        each = ", ".join(f"{c:.2f}" for c, _ in v)
        print(f"{name:<20} {best[name][0]:>11.2f} {best[name][1]:>12.2f} {shown}   {each}")
    ratio = best["one after another"][0] / best["vectorised"][0]
    print(
        f"ratio {ratio:.2f}x in CPU seconds ({best['one after another'][1] / best['vectorised'][1]:.2f}x wall), best"
        f" runs; largest weight difference between the paths {dw:.1e}; floor: the dense matmuls alone"
        f" {floor:.2f} CPU-s per model ({rate:.1f} GFLOP/s, timed here at the trainer's shapes), the vectorised"
        f" trainer at {floor / best['vectorised'][0]:.0%} of its time in them",
        flush=True,
    )
    return {"vectorised": best["vectorised"][0], "sequential": best["one after another"][0], "ratio": ratio}


class _RecordRows(torch.utils.data.Dataset):
    """One record per item, a float tensor made from a numpy row at every access (as a per-record ``Dataset``
    of a tabular tool hands rows to its ``DataLoader``)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x.flatten(1).numpy(), y.numpy()

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tensor(self.x[i], dtype=torch.float32), torch.tensor(self.y[i], dtype=torch.long)


def per_record_loop(
    model: str, data_spec: object, x: torch.Tensor, y: torch.Tensor, masks: torch.Tensor, epochs: int, batch: int
) -> float:
    """CPU seconds per model of the peer's loop, one model after another, each trained the way ML Privacy
    Meter's ``trainers/default_trainer.py`` trains a reference model (written here from that description: a
    shuffled ``DataLoader`` over a per-record dataset, plain SGD at lr 0.1 under a warm-up + cosine
    ``LambdaLR``, ``loss.item()`` and the batch's correct count every step). ``num_workers=0``, so that every
    CPU second lands in this process (its 4 loader workers move that work elsewhere, they do not remove it)."""
    c0 = time.process_time()
    for k, mask in enumerate(masks):
        net = fedleak.models.build(model, data_spec, seed=k)  # type: ignore[arg-type]
        own = mask.nonzero().flatten()
        loader = torch.utils.data.DataLoader(_RecordRows(x[own], y[own]), batch_size=batch, shuffle=True)
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        total = epochs * len(loader)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s, total=total: math.cos(s / total * 7 * math.pi / 16) * min(1.0, s / total * 100)
        )
        net.train()
        for _ in range(epochs):
            loss_sum, correct = 0.0, 0
            for xb, yb in loader:
                opt.zero_grad(set_to_none=True)
                out = net(xb)
                loss = torch.nn.functional.cross_entropy(out, yb)
                loss.backward()
                opt.step()
                sched.step()
                loss_sum += loss.item()
                correct += int(out.argmax(1).eq(yb).sum().item())
    return (time.process_time() - c0) / len(masks)


PEER_TRAININGS = (  # (label, epochs, batch, momentum)
    ("fedleak's: 50 epochs of 64", 50, 64, 0.9),
    ("ML Privacy Meter's: 100 of 256", 100, 256, 0.0),
)


def peer_cost(
    data_spec: object,
    x: torch.Tensor,
    y: torch.Tensor,
    model: str,
    references: int,
    seed: int = 0,
    trainings: tuple = PEER_TRAININGS,
) -> None:
    """Location's shape at both trainings per model: fedleak's (50 epochs of batch 64 on 2,505 records: 2,000
    steps, 125,250 record passes) and ML Privacy Meter's tabular default (``configs/purchase.yaml``: 100 epochs
    of batch 256: 1,000 steps, 250,500 record passes): fedleak's vectorised trainer (K models) beside the
    peer's loop (one model; its cost per model does not depend on K), CPU-s per model."""
    masks = balanced_masks(references, len(x), seed=seed + 1)
    n_own = int(masks[0].sum())
    print(
        f"\n## per model, fedleak's vectorised trainer (K={references}) beside ML Privacy Meter's training loop"
        f" (one model; its cost per model does not depend on K), {model} on Location's shape, {n_own} records each"
    )
    print(f"{'training':<34} {'steps':>6} {'fedleak vectorised':>19} {'peer loop':>10} {'ratio':>6}")
    for label, epochs, batch, momentum in trainings:
        ts = TrainSpec(epochs=epochs, batch_size=batch, lr=0.1, momentum=momentum)
        c0 = time.process_time()
        train_references(model, data_spec, x, y, masks, ts, seed=seed)
        ours = (time.process_time() - c0) / references
        peer = per_record_loop(model, data_spec, x, y, masks[:1], epochs, batch)
        steps = epochs * math.ceil(n_own / batch)
        print(f"{label:<34} {steps:>6} {ours:>19.2f} {peer:>10.2f} {peer / ours:>5.1f}x", flush=True)
    print(
        f"issue 16's figure for ML Privacy Meter: about {PUBLISHED_SECONDS_PER_REFERENCE} s per model on Location's"
        " MLP, one after another, at settings the issue does not give; at its tabular default that is 250,500 record"
        " passes (about 63 GFLOP), more than this machine's one core computes in 1.2 s",
        flush=True,
    )


def tabular_cost(
    spec: str,
    members: int,
    population: int,
    model: str,
    epochs: int,
    lr: float,
    batch_size: int,
    references: int,
    seed: int = 0,
    location_shape: bool = True,
) -> None:
    """The reference models of the tabular protocol on ``spec`` (the pool run_mia trains them on: members,
    non-members and population) by both trainers, their accuracy on up to 2,000 records outside the pool; with
    ``location_shape`` the same on a random table of Location's shape (5,010 records, 446 binary features,
    30 classes): cost only, no attack figures."""
    from fedleak.data.dataset import DataSpec

    data = fedleak.data.load(spec)
    mem, non, pop = split_membership(data, members, seed, population)
    px = torch.cat([part.tensors()[0] for part in (mem, non, pop)])
    py = torch.cat([part.tensors()[1] for part in (mem, non, pop)])
    ts = TrainSpec(epochs=epochs, batch_size=batch_size, lr=lr, momentum=0.9)
    used = torch.zeros(len(data), dtype=torch.bool)
    for part in (mem, non, pop):
        used[part.indices] = True
    held = data.subset(torch.nonzero(~used).flatten()[:2000])  # records no reference model saw (if any)
    test = held.tensors() if len(held) else (None, None)
    reference_cost(f"the tabular protocol on {_short(spec)}", data.spec, px, py, *test, model, ts, references, seed)
    if location_shape:
        g = torch.Generator().manual_seed(seed)
        n, f, c = members * 2 + population, 446, 30
        x = (torch.rand(n, f, generator=g) < 0.2).float()
        y = torch.randint(0, c, (n,), generator=g)
        spec_loc = DataSpec("location-shaped", "table", (f,), c, tuple(map(str, range(c))), (0.0,) * f, (1.0,) * f)
        reference_cost(
            "a random table of Location's shape (446 binary features, 30 classes; cost only)",
            spec_loc,
            x,
            y,
            None,
            None,
            model,
            ts,
            references,
            seed,
        )
        peer_cost(spec_loc, x, y, model, references, seed)


def mia_all(spec: str, baseline_src: str | None, seed: int = 0, timeout: int = 3600) -> None:
    """``fedleak mia --attack all`` on the tabular protocol as a user runs it, in subprocesses one after the
    other: the vectorised trainer, ``--sequential``, and (with ``baseline_src``, e.g. a ``git worktree`` of an
    older commit's ``src``) the older code's vectorised trainer. Wall and CPU seconds of each whole command,
    the reference models' own seconds, and AUC / TPR@1% of LiRA, RMIA and Shokri from each results.json."""
    import resource

    args = [
        "--dataset",
        spec,
        "--model",
        "mlp:128",
        "--attack",
        "all",
        "--members",
        "1000",
        "--population",
        "3010",
        "--references",
        "16",
        "--epochs",
        "50",
        "--batch-size",
        "64",
        "--lr",
        "0.1",
        "--seed",
        str(seed),
    ]
    runs = [("vectorised", None, []), ("--sequential", None, ["--sequential"])]
    if baseline_src:
        runs.insert(0, (f"vectorised, {baseline_src}", baseline_src, []))
    print(
        f"\n## fedleak mia --attack all on the tabular protocol ({_short(spec)}, mlp:128, 16 references, seed {seed})"
    )
    print("command: fedleak mia " + " ".join(args) + " --out DIR")
    print(
        f"{'run':<34} {'wall s':>7} {'CPU s':>7} {'refs s':>7} {'LiRA AUC':>9} {'TPR@1%':>7} {'RMIA AUC':>9} "
        f"{'TPR@1%':>7} {'Shokri AUC':>10}"
    )
    got = {}
    for name, src, extra in runs:
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "FLWR_TELEMETRY_ENABLED": "0"}
        env["PYTHONPATH"] = src if src else str(HERE.parent / "src")
        with tempfile.TemporaryDirectory() as tmp:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "fedleak.cli", "mia", *args, *extra, "--out", tmp],
                capture_output=True,
                text=True,
                env=env,
                timeout=timeout,
                check=False,
            )
            wall = time.perf_counter() - t0
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if done.returncode != 0:
                print(f"{name:<34} failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
                continue
            r = json.loads((Path(tmp) / "results.json").read_text())
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        a = r["attacks"]
        got[name] = (wall, cpu)
        print(
            f"{name:<34} {wall:>7.1f} {cpu:>7.1f} {r['references']['seconds']:>7.1f} {a['lira']['auc']:>9.3f} "
            f"{a['lira']['tpr_at_fpr']['0.01']:>7.3f} {a['rmia']['auc']:>9.3f} {a['rmia']['tpr_at_fpr']['0.01']:>7.3f} "
            f"{a['shokri']['auc']:>10.3f}",
            flush=True,
        )
    if "vectorised" in got:
        wall, cpu = got["vectorised"]
        for name, (w, c) in got.items():
            if name != "vectorised":
                print(f"{name} / vectorised: {w / wall:.2f}x wall, {c / cpu:.2f}x CPU")


def _short(spec: str) -> str:
    """'mnist:/a/b/mnist-test' -> 'mnist-test'; 'csv:loc.csv?label=y' -> 'loc.csv'; 'digits' -> 'digits'."""
    name, _, path = spec.partition("?")[0].partition(":")
    return Path(path).name or name if path else name


def run_split_and_target(spec: str, members: int, population: int, seed: int, model: str, out: Path, device="cpu"):  # noqa: ANN001, ANN201
    """What a ``run_mia(..., out=out)`` run used: the dataset, its split (members, non-members, population)
    and the target it trained, read back from ``out``."""
    from fedleak.models import build, load_weights

    data = fedleak.data.load(spec)
    mem, non, pop = split_membership(data, members, seed, population)
    target_file = next(Path(out).glob("target-*.safetensors"))
    target = load_weights(build(model, data.spec, seed=seed, device=device), target_file).eval()
    return data, (mem, non, pop), target


def export_for_art(
    path: Path, spec: str, members: int, population: int, seed: int, model: str, out: Path, train: dict
) -> None:
    """The split (flattened float32 inputs as the model sees them) and the target's softmax outputs on the
    members and non-members, for bench/art_shadow.py (which runs without torch)."""
    import numpy as np

    from fedleak.registry import parse_spec

    data, (mem, non, pop), target = run_split_and_target(spec, members, population, seed, model, out)
    name, args, kwargs = parse_spec(model)
    arrays = {}
    for key, part in (("members", mem), ("nonmembers", non), ("population", pop)):
        x, y = part.tensors()
        arrays[f"x_{key}"] = x.flatten(1).float().numpy()
        arrays[f"y_{key}"] = y.numpy()
        if key != "population":
            with torch.no_grad():
                arrays[f"p_{key}"] = torch.softmax(target(x).float(), -1).numpy()
    meta = {
        "dataset": spec,
        "model": model,
        "hidden": [int(a) for a in args] or [128] if name == "mlp" else None,
        "act": kwargs.get("act", "tanh"),
        "num_classes": data.spec.num_classes,
        "seed": seed,
        **train,
    }
    np.savez(path, meta=np.array(json.dumps(meta)), **arrays)


def run_art(art_python: str, npz: Path, shadows: int) -> dict:
    script = HERE / "art_shadow.py"
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run(
        [art_python, str(script), str(npz), "--shadows", str(shadows), "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{script.name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def tabular(
    spec: str,
    members: int,
    population: int,
    model: str,
    epochs: int,
    lr: float,
    batch_size: int,
    references: int,
    shadows: int,
    device: str,
    seed: int = 0,
    art_python: str | None = None,
    art_export: Path | None = None,
) -> dict[str, float | None]:
    """The classic tabular protocol (see the module docstring) on ``spec``, beside the Location figures;
    returns each attack's AUC (and ART's) for the summary over seeds."""
    data = fedleak.data.load(spec)
    features, classes = math.prod(data.spec.shape), data.spec.num_classes
    common = dict(
        dataset=spec,
        model=model,
        members=members,
        population=population,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        device=device,
        echo=lambda line: None,
    )
    main = run_mia(attack="loss,lira,rmia", references=references, **common)  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory() as tmp:
        # Shokri with its own shadow count (run_mia gives Shokri --references shadow models); same seed and
        # options, so the same split and the same target (checked below)
        shok = run_mia(attack="shokri", references=shadows, out=tmp, **common)  # type: ignore[arg-type]
        art = None
        if art_python or art_export:
            npz = art_export or Path(tmp) / "split.npz"
            train = {"epochs": epochs, "lr": lr, "batch_size": batch_size, "momentum": 0.9}
            export_for_art(npz, spec, members, population, seed, model, Path(tmp), train)
            if art_python:
                art = run_art(art_python, npz, shadows)
    t, split, refs = main["target"], main["split"], main["references"]
    same_target = abs(t["test_loss"] - shok["target"]["test_loss"]) < 1e-6
    where = f"fedleak on {_short(spec)}"
    print(
        f"\n## tabular protocol on {spec} ({len(data)} records, {features} features, {classes} classes;"
        f" Location: 5,010 records, 446 features, 30 classes)"
    )
    print(
        f"target {model}, {epochs} epochs of batch {batch_size}, lr {lr}, momentum 0.9: train accuracy "
        f"{t['train_accuracy']:.3f}, test accuracy {t['test_accuracy']:.3f}; {split['members']} members, "
        f"{split['nonmembers']} non-members, {split['population']} population records"
        + ("" if same_target else "  [WARNING: the Shokri run's target differs]")
    )
    if t["train_accuracy"] < 1.0:
        print("WARNING: the target does not fit its members to 100%, the protocol's premise; raise --tabular-epochs")
    print(
        f"reference models: {refs['count']} in {refs['seconds']:.1f} s vectorised = "
        f"{refs['seconds'] / refs['count']:.2f} s per model (wall, inside run_mia; the section 'reference models of"
        " the tabular protocol' below times both trainers on them)"
    )
    head = f"{'attack':<40} {'where':<36} {'AUC':>6} {'TPR@1%':>7} {'TPR@0.1%':>9} {'seconds':>8}"
    print(head)
    print("-" * len(head))

    def num(v: float | None, width: int) -> str:
        return f"{'-':>{width}}" if v is None else f"{v:>{width}.3f}"

    def line(label: str, who: str, auc: float, t1: float | None, t01: float | None, secs: float | None) -> None:
        sec = f"{'-':>8}" if secs is None else f"{secs:>8.1f}"
        print(f"{label:<40} {who:<36} {num(auc, 6)} {num(t1, 7)} {num(t01, 9)} {sec}")

    attacks = {**main["attacks"], "shokri": {**shok, "seconds": shok["seconds"]}}
    ours = {
        "lira": (f"LiRA online, {references} refs", attacks["lira"]["seconds"]),
        "rmia": (f"RMIA online, {references} refs", attacks["rmia"]["seconds"] + refs["seconds"]),
        "loss": ("loss threshold", attacks["loss"]["seconds"]),
        "shokri": (f"Shokri, {shadows} shadows, boosted trees", attacks["shokri"]["seconds"]),
    }
    for key, (pub_label, (auc, t1, t01)) in PUBLISHED_LOCATION.items():
        line(pub_label, "published on Location", auc, t1, t01, None)
        label, secs = ours[key]
        f = attacks[key]["tpr_at_fpr"]
        line(f"  {label}", where, attacks[key]["auc"], f["0.01"], f["0.001"], secs)
        if key == "shokri" and art is not None:
            line(
                f"  ART shadow models, {art['shadows']} shadows, RF",
                f"ART {art['art_version']} on {_short(spec)}",
                art["auc"],
                art["tpr_at_fpr"]["0.01"],
                art["tpr_at_fpr"]["0.001"],
                art["seconds"],
            )
    print("seconds: LiRA and RMIA include training the reference models (which they share), Shokri its shadow models")
    if art is not None:
        print(
            f"ART: same split and target outputs; shadows {art['shadow_model']} on the population "
            f"(member ratio {art['member_ratio']}, {art['shadow_train_records']} records each, train accuracy "
            f"{art['shadow_train_accuracy']:.3f}, held-out {art['shadow_test_accuracy']:.3f})"
        )
    return {**{key: attacks[key]["auc"] for key in ours}, "art": None if art is None else art["auc"]}


def federation(seeds: list[int], clients: int = 5, rounds: int = 10, held_out: int = 397) -> None:
    """Membership in one client's data from every round's updates vs the loss of the final global model, per
    client: digits, mlp, ``clients`` IID clients, ``rounds`` FedAvg rounds; non-members: ``held_out`` records no
    client held."""
    from fedleak.audit.mia import attack_federation
    from fedleak.fl import FedConfig, Federation

    print(f"\n## federation: digits, mlp, {clients} clients, {rounds} FedAvg rounds, {held_out} held-out non-members")
    print(f"{'seed':>4} {'client':>6} {'members':>7} {'rounds AUC':>10} {'TPR@1%':>7} {'final AUC':>9} {'TPR@1%':>7}")
    data = fedleak.data.load("digits")
    sums = {"federation": [0.0, 0.0], "final_model": [0.0, 0.0]}
    n = 0
    for seed in seeds:
        perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
        train, test = data.subset(perm[: len(data) - held_out]), data.subset(perm[len(data) - held_out :])
        fed = Federation(
            fedleak.models.build("mlp", data.spec, seed=seed), train, test, FedConfig(clients, rounds, seed=seed)
        )
        kept = [r.updates for r in fed.run(keep_updates=True)]
        res = attack_federation(kept, {k: fed.client_data(k) for k in range(clients)}, test, fed.model)
        for k, r in res["clients"].items():
            f, g = r["federation"], r["final_model"]
            print(
                f"{seed:>4} {k:>6} {f['counts']['members']:>7} {f['auc']:>10.3f} {f['tpr_at_fpr']['0.01']:>7.3f} "
                f"{g['auc']:>9.3f} {g['tpr_at_fpr']['0.01']:>7.3f}"
            )
            for key, rep in r.items():
                sums[key][0] += rep["auc"]
                sums[key][1] += rep["tpr_at_fpr"]["0.01"]
            n += 1
    for key, (auc, tpr) in sums.items():
        print(f"mean over {n} client attacks, {key}: AUC {auc / n:.3f}, TPR@1% FPR {tpr / n:.3f}")


def rmia_choices(spec: str, seeds: list[int], members: int = 1000, population: int = 3010, held: int = 1000) -> None:
    """The RMIA tuning choices of :mod:`fedleak.attacks.membership.rmia` on the tabular protocol: temperature,
    gamma, z (population the references trained on vs ``held`` records none trained on), trimmed mean, offline
    ``a``; beside LiRA online on the same target and reference models."""
    from fedleak.attacks.membership import MembershipContext, Records, membership_scores
    from fedleak.attacks.membership.rmia import rmia_scores, tune_offline_a
    from fedleak.attacks.membership.signals import confidence
    from fedleak.fl import SGDTrainer
    from fedleak.metrics import roc_report

    data = fedleak.data.load(spec)
    ts = TrainSpec(epochs=50, batch_size=64, lr=0.1, momentum=0.9)
    print(f"\n## RMIA choices on {_short(spec)}: mlp:128, {members} members, 16 references, {held} z none trained on")
    for seed in seeds:
        mem, non, pop = split_membership(data, members, seed, population)
        trained_pop, z_out = pop.subset(range(len(pop) - held)), pop.subset(range(len(pop) - held, len(pop)))
        torch.manual_seed(seed)
        target = fedleak.models.build("mlp:128", data.spec, seed=seed)
        SGDTrainer().train(target, *mem.tensors(), ts, torch.Generator().manual_seed(seed))
        target.eval()
        recs = Records.of(mem).cat(Records.of(non))
        is_member = torch.arange(len(recs)) < len(mem)
        ctx = MembershipContext(target, recs, Records.of(trained_pop), 16, "mlp:128", data.spec, ts, seed)
        refs, in_x, in_z = ctx.reference_set(True)

        def show(label: str, scores: torch.Tensor, is_member: torch.Tensor = is_member, seed: int = seed) -> None:
            r = roc_report(scores, is_member)
            t = r["tpr_at_fpr"]
            print(f"seed {seed} {label:<40} AUC {r['auc']:.3f} TPR@1% {t['0.01']:.3f} TPR@0.1% {t['0.001']:.3f}")

        show("lira online", membership_scores(target, None, "lira", context=ctx))
        xo, yo = z_out.tensors()
        logits = {
            "pop": (ctx.target_population_logits(), ctx.reference_logits(True, "population"), trained_pop.labels, in_z),
            "out": (ctx.query(xo), refs.logits(xo).float(), yo, torch.zeros(16, len(yo), dtype=torch.bool)),
        }
        tx, rx = ctx.target_logits(), ctx.reference_logits(True)
        for temp in (1.0, 2.0, 3.0, 4.0):
            px, qx = confidence(tx / temp, recs.y), confidence(rx / temp, recs.y)
            for zname, (tz, rz, yz, inz) in logits.items():
                pz, qz = confidence(tz / temp, yz), confidence(rz / temp, yz)
                for gamma in (1.0, 2.0):
                    for trim in (0.0, 0.1, 0.25):
                        s = rmia_scores(px, qx, pz, qz, gamma=gamma, trim=trim)
                        show(f"online T{temp} z={zname} gamma {gamma} trim {trim}", s)
                if zname == "out":
                    tuned = tune_offline_a(qx, in_x, qz, inz)
                    for a in sorted({0.0, 0.3, 0.6, tuned}):
                        s = rmia_scores(px, qx, pz, qz, in_x=in_x, in_z=inz, online=False, a=a, gamma=2.0)
                        show(f"offline T{temp} z=out a {a}{' (tuned)' if a == tuned else ''}", s)


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
    ap.add_argument("--cifar-epochs", type=int, default=20)
    ap.add_argument("--cifar-lr", type=float, default=0.01, help="0.05 leaves the BN ConvNet near 40%% train accuracy")
    ap.add_argument("--cifar-references", type=int, default=4)
    ap.add_argument("--tabular", default=DEFAULT_TABULAR, help="dataset spec for the tabular protocol")
    ap.add_argument("--tabular-members", type=int, default=1000)
    ap.add_argument("--tabular-population", type=int, default=3010)
    ap.add_argument("--tabular-model", default="mlp:128")
    ap.add_argument("--tabular-epochs", type=int, default=50)
    ap.add_argument("--tabular-lr", type=float, default=0.1)
    ap.add_argument("--tabular-batch", type=int, default=64)
    ap.add_argument("--tabular-references", type=int, default=16)
    ap.add_argument("--tabular-shadows", type=int, default=4)
    ap.add_argument("--tabular-seeds", default="0", help="seeds of the tabular protocol (split, target, models)")
    ap.add_argument("--art-python", help="a Python with adversarial-robustness-toolbox: adds ART's shadow attack")
    ap.add_argument("--art-export", type=Path, help="write the tabular split and target outputs (.npz) here")
    ap.add_argument("--speed-repeats", type=int, default=3, help="best of this many runs per path")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-attacks", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-cifar", action="store_true")
    ap.add_argument("--skip-tabular", action="store_true")
    ap.add_argument("--federation", default="", help="seeds (e.g. 0,1): membership per client from every round")
    ap.add_argument("--only-federation", action="store_true", help="run only the federation section")
    ap.add_argument("--rmia-choices", default="", help="seeds (e.g. 0,1): RMIA's tuning choices on --tabular")
    ap.add_argument("--skip-cost", action="store_true", help="skip the tabular protocol's reference-model cost")
    ap.add_argument("--no-location-shape", action="store_true", help="cost on the --tabular data only")
    ap.add_argument("--mia-all", action="store_true", help="time fedleak mia --attack all, vectorised vs --sequential")
    ap.add_argument("--baseline-src", help="with --mia-all: also run an older checkout's src (git worktree)")
    ap.add_argument("--only-speed", action="store_true", help="only the cost sections (speed, cost, --mia-all)")
    args = ap.parse_args()

    if args.rmia_choices:
        rmia_choices(args.tabular, [int(v) for v in args.rmia_choices.split(",")])
    if args.federation:
        federation([int(v) for v in args.federation.split(",")])
    if args.only_federation:
        return  # (after --rmia-choices and --federation when given)

    if not args.skip_speed:
        for b in args.speed_batch.split(","):
            ks = [int(k) for k in args.ks.split(",")]
            speed(ks, args.speed_model, args.speed_epochs, int(b), repeats=args.speed_repeats)
    if not args.skip_cost:
        tabular_cost(
            args.tabular,
            args.tabular_members,
            args.tabular_population,
            args.tabular_model,
            args.tabular_epochs,
            args.tabular_lr,
            args.tabular_batch,
            args.tabular_references,
            location_shape=not args.no_location_shape,
        )
    if args.mia_all:
        mia_all(args.tabular, args.baseline_src)
    if args.only_speed:
        return
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
    if not args.skip_tabular:
        seeds = [int(v) for v in args.tabular_seeds.split(",")]
        aucs, export = {}, args.art_export
        for seed in seeds:
            aucs[seed] = tabular(
                args.tabular,
                args.tabular_members,
                args.tabular_population,
                args.tabular_model,
                args.tabular_epochs,
                args.tabular_lr,
                args.tabular_batch,
                args.tabular_references,
                args.tabular_shadows,
                args.device,
                seed=seed,
                art_python=args.art_python,
                art_export=export if export is None or len(seeds) == 1 else export.with_stem(f"{export.stem}-{seed}"),
            )
        if len(seeds) > 1:
            print(f"\n## tabular protocol, AUC by seed ({_short(args.tabular)})")
            print(f"{'seed':>4} {'LiRA':>6} {'RMIA':>6} {'loss':>6} {'Shokri':>7} {'ART':>6}")
            for seed, a in aucs.items():
                art = "     -" if a["art"] is None else f"{a['art']:>6.3f}"
                print(f"{seed:>4} {a['lira']:>6.3f} {a['rmia']:>6.3f} {a['loss']:>6.3f} {a['shokri']:>7.3f} {art}")
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
                lr=args.cifar_lr,
                batch_size=128,
                device=args.device,
            )


if __name__ == "__main__":
    main()
