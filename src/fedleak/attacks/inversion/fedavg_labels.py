"""A FedAvg client's labels and how its shuffle grouped them into local steps, found by simulating its training.

Reading label counts off the last layer (:mod:`labels`) assumes the model's mean softmax output holds still while
the client trains. After a few local steps it need not: on DLG's LeNet (CIFAR-10, 4 records, 2 steps of 2 at lr
0.01, ``fedleak invert --attack fedavg --seed 0``) the counts so read are wrong in both updates (class estimates
off by up to 1.4 records, even with the client's own images as the model's inputs), because one step moves the
output from one class to another. And which records shared a step changes the update: replayed with the true
images under a wrong pairing the update is missed by 6-20% of its squared norm, under the right one by 1e-11.

So the attacker simulates instead. For every candidate row of labels (a multiset of classes and its arrangement
over the steps, :func:`fedleak.attacks.inversion.replay.label_arrangements`) it replays the client's local SGD on
its own inputs (``draws`` sets of N(0, 1) records in model-input space, the same for every candidate), and compares
the last layer's bias change (or, without a bias, its weight rows' sums) with the one observed; the candidates
that match best become the attack's restarts. The bias change depends on the inputs only through the model's
softmax outputs, which at the weights a server sends depend on the labels and steps far more than on the images:
on the two updates above the true row ranks first of 3,025 on 64 draws (relative mismatch 2e-4 and 3e-3, the
next 7e-2 and 7e-3), and within the first two on 4 (7 s per update on one core). So every candidate is simulated
on ``SIM_RECORDS`` records (in sets of the update's n) and the best ``SHORTLIST`` again on ``REFINE_RECORDS``
others, which rank them.

Small problems (at most ``EXHAUSTIVE_LIMIT`` rows) are searched exhaustively; larger ones by a local search from
the analytic counts (change one record's class, or swap two records between steps, while the mismatch falls).
Updates of more than ``MAX_RECORDS`` records are not searched (the caller keeps the analytic counts).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import Tensor, nn
from torch.func import vmap

from fedleak.attacks.inversion.labels import last_layer
from fedleak.attacks.inversion.replay import (
    epoch_count,
    epoch_groupings,
    fedavg_delta,
    first_epoch,
    label_arrangements,
    schedule_batches,
    step_key,
)
from fedleak.fl.update import ClientUpdate

MAX_RECORDS = 16  # updates of more records keep the analytic counts in their given order (the search would cost
# minutes per update: each move simulates the client's whole local training for hundreds of candidate rows)
EXHAUSTIVE_LIMIT = 5_000  # candidate rows searched one by one; beyond, the local search
# records of the attacker's own each candidate is simulated on, in sets of the update's n (the mismatch is their mean):
# 4 sets at n = 4 (where the counts were measured), one at n = 16: each set averages over its n records. 64 sets of
# 16 records cost 32 CPU-s per update of the demo (LeNet, 3 epochs of 8, 2 classes), where neither 16 nor 64 sets
# ranked the client's count first (2 classes: the bias change is one number, see the caller's note)
SIM_RECORDS = 16
SHORTLIST = 64  # the best candidates are simulated again on REFINE_RECORDS other records, which rank them
REFINE_RECORDS = 256
# schedules whose simulated mismatch is within this factor of the best one are not told apart: the run says so.
# Measured: on digits (lr 0.5) the client's grouping of the later epochs beats the next by 10-60x; on CIFAR-10 with
# DLG's LeNet (lr 0.01-0.1) all 36 groupings of 4 records in 3 epochs of 2 agree to 2 digits
SCHEDULE_TIE = 1.1
# updates of more records are replayed with every epoch in the first's grouping, unsearched (16 records in 3 epochs of
# 8: 12,870 groupings per epoch, a local search of 63 CPU-s per update beside the label search's 68, which would double
# the demo's audit for groupings that tie there)
SCHEDULE_RECORDS = 8
CHUNK = 256  # candidates per vectorised simulation
MAX_MOVES = 50  # local search: improving moves at most


def _signal(payload: dict[str, Tensor], weight: str, bias: str | None) -> Tensor:
    return payload[bias] if bias is not None else payload[weight].sum(1)


class _Simulator:
    """The relative mismatch of the last layer's simulated change against the observed one, per candidate row."""

    def __init__(
        self,
        module: nn.Module,
        theta: dict[str, Tensor],
        consts: dict[str, Tensor],
        update: ClientUpdate,
        seed: int,
        records: int,
    ) -> None:
        spec = update.data_spec
        assert spec is not None
        self.weight, self.bias = last_layer(update.payload, spec.num_classes)
        ref = next(iter(theta.values()))
        observed = _signal(update.payload, self.weight, self.bias).to(ref)  # type: ignore[arg-type]
        self.observed, self.norm = observed, observed.pow(2).sum().clamp_min(1e-30)
        n = int(update.num_samples)  # type: ignore[arg-type]
        draws = -(-records // n)
        gen = torch.Generator().manual_seed(seed * 7919 + 4242)
        self.inputs = torch.randn((draws, n, *spec.shape), generator=gen, dtype=ref.dtype).to(ref.device)
        steps, lr, b = int(update.local_steps), float(update.local_lr), int(update.batch_size)  # type: ignore[arg-type]
        self.epochs = epoch_count(n, b, steps)

        def one(labels: Tensor, schedule: Tensor, x: Tensor) -> Tensor:
            order = schedule_batches(schedule, n, b, steps)
            d = fedavg_delta(
                module, theta, consts, x, labels, local_steps=steps, local_lr=lr, batch_size=b, order=order
            )
            return _signal(d, self.weight, self.bias)  # type: ignore[arg-type]

        self.many = vmap(one, in_dims=(0, 0, None))
        self.device = ref.device
        self.n = n

    @torch.no_grad()
    def mismatch(self, rows: Tensor, schedules: Tensor | None = None) -> Tensor:
        """``rows`` (A, n) labels; ``schedules`` (A, E, n) each epoch's record order (None: every epoch in
        the first's, as :func:`~fedleak.attacks.inversion.replay.local_batches` replays them)."""
        if schedules is None:
            schedules = torch.arange(self.n).expand(len(rows), self.epochs, self.n)
        out = []
        for i in range(0, len(rows), CHUNK):
            part = rows[i : i + CHUNK].to(self.device)
            sched = schedules[i : i + CHUNK].to(self.device)
            pred = torch.stack([self.many(part, sched, x) for x in self.inputs]).mean(0)
            out.append((pred - self.observed).pow(2).sum(1) / self.norm)
        return torch.cat(out).double().cpu()


def _exhaustive(classes: int, n: int, b: int, steps: int, multiset: Tensor | None) -> Tensor | None:
    """Every candidate row, or None when they are more than EXHAUSTIVE_LIMIT."""
    if multiset is not None:
        rows = label_arrangements(multiset, b, steps, EXHAUSTIVE_LIMIT + 1)
        return rows if len(rows) <= EXHAUSTIVE_LIMIT else None
    if math.comb(classes + n - 1, n) > EXHAUSTIVE_LIMIT:
        return None
    out: list[Tensor] = []
    left = EXHAUSTIVE_LIMIT
    for ms in itertools.combinations_with_replacement(range(classes), n):
        out.append(label_arrangements(torch.tensor(ms), b, steps, left + 1))
        left -= len(out[-1])
        if left < 0:
            return None
    return torch.cat(out)


def _step_of(epoch: list[slice], n: int) -> list[int]:
    """Each record's step within the epoch's batches."""
    return [next(s for s, sl in enumerate(epoch) if sl.start <= i < sl.stop) for i in range(n)]


def _refined(sim: _Simulator, rows: list, schedules: list | None, count: int) -> tuple[list[int], list[float]]:
    """The ``count`` best of the candidates (``rows``, with ``schedules`` or None) re-simulated by ``sim`` on its
    own draws: their indices, best first, and their mismatches."""
    err = sim.mismatch(torch.tensor(rows), None if schedules is None else torch.tensor(schedules)).tolist()
    best = sorted(range(len(rows)), key=err.__getitem__)[:count]
    return best, [err[i] for i in best]


def _descend(
    score: Callable[[list], list[float]], start: list, key: Callable[[list], tuple], moves: Callable[[list], Iterable]
) -> dict[tuple, tuple]:
    """From ``start``, the best of the candidates ``moves`` makes of the current one, while the mismatch (``score``
    of a list of candidates) falls, at most MAX_MOVES times; candidates with the same ``key`` are one. Returns every
    candidate looked at: key -> (mismatch, candidate)."""
    best = score([start])[0]
    seen: dict[tuple, tuple] = {key(start): (best, start)}
    current = start
    for _ in range(MAX_MOVES):
        fresh: dict[tuple, list] = {}
        for cand in moves(current):
            k = key(cand)
            if k not in seen:
                fresh.setdefault(k, cand)
        if not fresh:
            break
        cands = list(fresh.values())
        err = score(cands)
        seen.update(zip(fresh, zip(err, cands, strict=True), strict=True))
        i = min(range(len(err)), key=err.__getitem__)
        if err[i] >= best:
            break
        best, current = err[i], cands[i]
    return seen


def _local_search(sim: _Simulator, start: Tensor, classes: int, epoch: list[slice], fixed: bool) -> dict[tuple, tuple]:
    """Moves from ``start`` while the mismatch falls: one record to another class (unless the multiset is
    ``fixed``), or two records of different steps swapped. Returns every row looked at: key -> (mismatch, row)."""
    n = int(start.numel())
    step_of = _step_of(epoch, n)

    def moves(row: list[int]) -> Iterator[list[int]]:
        for i in range(n):
            if not fixed:
                yield from (row[:i] + [c] + row[i + 1 :] for c in range(classes) if c != row[i])
            for j in range(i + 1, n):
                if step_of[i] != step_of[j] and row[i] != row[j]:
                    r = list(row)
                    r[i], r[j] = r[j], r[i]
                    yield r

    return _descend(
        lambda rows: sim.mismatch(torch.tensor(rows)).tolist(), start.tolist(), lambda r: step_key(r, epoch), moves
    )


def rank_label_rows(
    module: nn.Module,
    theta: dict[str, Tensor],
    consts: dict[str, Tensor],
    update: ClientUpdate,
    estimate: Tensor,
    count: int,
    *,
    granted: bool = False,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """The ``count`` label rows (count, n) whose simulated local training best matches the update's last layer,
    best first, with their relative mismatches. ``estimate``: the analytic labels (n,), the local search's start;
    with ``granted`` they are the client's true labels and only their arrangement over the steps is searched."""
    spec = update.data_spec
    assert spec is not None
    n, b, steps = int(update.num_samples), int(update.batch_size), int(update.local_steps)  # type: ignore[arg-type]
    sim = _Simulator(module, theta, consts, update, seed, SIM_RECORDS)
    epoch = first_epoch(n, b, steps)
    rows = _exhaustive(spec.num_classes, n, b, steps, estimate.cpu() if granted else None)
    if rows is not None:
        err = sim.mismatch(rows)
        seen = {step_key(r, epoch): (float(e), r) for r, e in zip(rows.tolist(), err.tolist(), strict=True)}
    else:
        seen = {}
        for start in label_arrangements(estimate.cpu(), b, steps, 2):
            seen |= _local_search(sim, start, spec.num_classes, epoch, granted)
    short = [r for _, r in sorted(seen.values(), key=lambda t: t[0])[:SHORTLIST]]
    refine = _Simulator(module, theta, consts, update, seed + 1, REFINE_RECORDS)
    best, err = _refined(refine, short, None, count)
    out = torch.tensor([short[i] for i in best], dtype=torch.long, device=estimate.device)
    return out, torch.tensor(err, dtype=torch.float64)


def _schedule_key(row: list[int], schedule: list[list[int]], epoch: list[slice]) -> tuple:
    """What tells two candidates apart: the labels, and which records share each later epoch's batches."""
    return (tuple(row), *(step_key(order, epoch) for order in schedule[1:]))


def _schedule_search(sim: _Simulator, row: list[int], epochs: int, epoch: list[slice]) -> dict[tuple, tuple]:
    """From every later epoch in the first's grouping, swap two records of different batches of one later epoch
    while the mismatch falls. Returns every candidate looked at: key -> (mismatch, row, schedule)."""
    n = len(row)
    step_of = _step_of(epoch, n)

    def moves(sched: list[list[int]]) -> Iterator[list[list[int]]]:
        for e in range(1, epochs):
            for i in range(n):
                for j in range(i + 1, n):
                    if step_of[i] != step_of[j]:
                        cand = [list(o) for o in sched]
                        cand[e][i], cand[e][j] = cand[e][j], cand[e][i]
                        yield cand

    seen = _descend(
        lambda cands: sim.mismatch(torch.tensor([row] * len(cands)), torch.tensor(cands)).tolist(),
        [list(range(n)) for _ in range(epochs)],
        lambda c: _schedule_key(row, c, epoch),
        moves,
    )
    return {k: (e, row, c) for k, (e, c) in seen.items()}


def rank_schedules(
    module: nn.Module,
    theta: dict[str, Tensor],
    consts: dict[str, Tensor],
    update: ClientUpdate,
    rows: Tensor,
    count: int,
    *,
    seed: int = 0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Several local epochs: the client reshuffles its records every epoch, so which records share a batch in
    epoch 2, 3, ... is unknown too, and it changes the update. For each label row of ``rows`` (A, n; record i of
    a row is dummy i, and the first epoch takes the records in that order), every grouping of each later epoch
    (:func:`~fedleak.attacks.inversion.replay.epoch_groupings`) is simulated as :func:`rank_label_rows` simulates
    labels (a local search of swaps within one later epoch when they are more than ``EXHAUSTIVE_LIMIT``). Returns
    the best ``count`` (labels (count, n), schedules (count, E, n): each epoch's record order, mismatches),
    best first. With one epoch the schedules are the identity and the rows keep their order."""
    n, b, steps = int(update.num_samples), int(update.batch_size), int(update.local_steps)  # type: ignore[arg-type]
    epochs = epoch_count(n, b, steps)
    epoch = first_epoch(n, b, n)
    sim = _Simulator(module, theta, consts, update, seed, SIM_RECORDS)
    groups = epoch_groupings(n, b, EXHAUSTIVE_LIMIT)
    seen: dict[tuple, tuple] = {}
    if groups is not None and len(rows) * len(groups) ** (epochs - 1) <= EXHAUSTIVE_LIMIT:
        ident = list(range(n))
        cands = [
            (r, [ident, *(groups[c].tolist() for c in combo)])
            for r in rows.tolist()
            for combo in itertools.product(range(len(groups)), repeat=epochs - 1)
        ]
        err = sim.mismatch(torch.tensor([r for r, _ in cands]), torch.tensor([c for _, c in cands])).tolist()
        for (r, c), e in zip(cands, err, strict=True):
            seen.setdefault(_schedule_key(r, c, epoch), (e, r, c))
    else:
        for r in rows.tolist():
            seen |= _schedule_search(sim, r, epochs, epoch)
    short = sorted(seen.values(), key=lambda t: t[0])[:SHORTLIST]
    refine = _Simulator(module, theta, consts, update, seed + 1, REFINE_RECORDS)
    best, err = _refined(refine, [r for _, r, _ in short], [c for _, _, c in short], count)
    labels = torch.tensor([short[i][1] for i in best], dtype=torch.long, device=rows.device)
    schedules = torch.tensor([short[i][2] for i in best], dtype=torch.long, device=rows.device)
    return labels, schedules, torch.tensor(err, dtype=torch.float64)


__all__ = [
    "EXHAUSTIVE_LIMIT",
    "MAX_RECORDS",
    "SCHEDULE_RECORDS",
    "SCHEDULE_TIE",
    "REFINE_RECORDS",
    "SIM_RECORDS",
    "rank_label_rows",
    "rank_schedules",
]
