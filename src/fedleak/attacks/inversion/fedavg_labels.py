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
on ``SIM_DRAWS`` sets and the best ``SHORTLIST`` again on ``REFINE_DRAWS`` other sets, which rank them.

Small problems (at most ``EXHAUSTIVE_LIMIT`` rows) are searched exhaustively; larger ones by a local search from
the analytic counts (change one record's class, or swap two records between steps, while the mismatch falls).
Updates of more than ``MAX_RECORDS`` records are not searched (the caller keeps the analytic counts).
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor, nn
from torch.func import vmap

from fedleak.attacks.inversion.labels import last_layer
from fedleak.attacks.inversion.replay import fedavg_delta, first_epoch, label_arrangements, step_key
from fedleak.fl.update import ClientUpdate

MAX_RECORDS = 16  # updates of more records keep the analytic counts in their given order (the search would cost
# minutes per update: each move simulates the client's whole local training for hundreds of candidate rows)
EXHAUSTIVE_LIMIT = 5_000  # candidate rows searched one by one; beyond, the local search
SIM_DRAWS = 4  # sets of the attacker's own inputs each candidate is simulated on (the mismatch is their mean)
SHORTLIST = 64  # the best candidates at SIM_DRAWS are simulated again on REFINE_DRAWS other sets, which rank them
REFINE_DRAWS = 64
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
        draws: int,
    ) -> None:
        spec = update.data_spec
        assert spec is not None
        self.weight, self.bias = last_layer(update.payload, spec.num_classes)
        ref = next(iter(theta.values()))
        observed = _signal(update.payload, self.weight, self.bias).to(ref)  # type: ignore[arg-type]
        self.observed, self.norm = observed, observed.pow(2).sum().clamp_min(1e-30)
        n = int(update.num_samples)  # type: ignore[arg-type]
        gen = torch.Generator().manual_seed(seed * 7919 + 4242)
        self.inputs = torch.randn((draws, n, *spec.shape), generator=gen, dtype=ref.dtype).to(ref.device)
        steps, lr, b = int(update.local_steps), float(update.local_lr), int(update.batch_size)  # type: ignore[arg-type]

        def one(labels: Tensor, x: Tensor) -> Tensor:
            d = fedavg_delta(module, theta, consts, x, labels, local_steps=steps, local_lr=lr, batch_size=b)
            return _signal(d, self.weight, self.bias)  # type: ignore[arg-type]

        self.many = vmap(one, in_dims=(0, None))
        self.device = ref.device

    @torch.no_grad()
    def mismatch(self, rows: Tensor) -> Tensor:
        out = []
        for i in range(0, len(rows), CHUNK):
            part = rows[i : i + CHUNK].to(self.device)
            pred = torch.stack([self.many(part, x) for x in self.inputs]).mean(0)
            out.append((pred - self.observed).pow(2).sum(1) / self.norm)
        return torch.cat(out).double().cpu()


def _exhaustive(classes: int, n: int, b: int, steps: int, multiset: Tensor | None) -> Tensor | None:
    """Every candidate row, or None when they are more than EXHAUSTIVE_LIMIT."""
    per = math.factorial(n) // math.factorial(min(b, n)) ** (n // max(1, min(b, n)))  # at most this many per multiset
    if multiset is not None:
        return label_arrangements(multiset, b, steps, EXHAUSTIVE_LIMIT) if per <= EXHAUSTIVE_LIMIT else None
    if math.comb(classes + n - 1, n) > EXHAUSTIVE_LIMIT:
        return None
    rows: list[Tensor] = []
    for ms in itertools.combinations_with_replacement(range(classes), n):
        rows.append(label_arrangements(torch.tensor(ms), b, steps, EXHAUSTIVE_LIMIT))
        if sum(len(r) for r in rows) > EXHAUSTIVE_LIMIT:
            return None
    return torch.cat(rows)


def _local_search(sim: _Simulator, start: Tensor, classes: int, epoch: list[slice], fixed: bool) -> dict[tuple, tuple]:
    """Moves from ``start`` while the mismatch falls: one record to another class (unless the multiset is
    ``fixed``), or two records of different steps swapped. Returns every row looked at: key -> (mismatch, row)."""
    seen: dict[tuple, tuple] = {}
    row = start.tolist()
    n = len(row)
    step_of = [next(s for s, sl in enumerate(epoch) if sl.start <= i < sl.stop) for i in range(n)]
    best = float(sim.mismatch(torch.tensor([row]))[0])
    seen[step_key(row, epoch)] = (best, row)
    for _ in range(MAX_MOVES):
        cand: list[list[int]] = []
        for i in range(n):
            if not fixed:
                cand += [row[:i] + [c] + row[i + 1 :] for c in range(classes) if c != row[i]]
            for j in range(i + 1, n):
                if step_of[i] != step_of[j] and row[i] != row[j]:
                    r = list(row)
                    r[i], r[j] = r[j], r[i]
                    cand.append(r)
        fresh = {}
        for r in cand:
            fresh.setdefault(step_key(r, epoch), r)
        fresh = {k: r for k, r in fresh.items() if k not in seen}
        if not fresh:
            break
        rows = list(fresh.values())
        err = sim.mismatch(torch.tensor(rows)).tolist()
        for k, r, e in zip(fresh, rows, err, strict=True):
            seen[k] = (e, r)
        i = min(range(len(err)), key=err.__getitem__)
        if err[i] >= best:
            break
        best, row = err[i], rows[i]
    return seen


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
    sim = _Simulator(module, theta, consts, update, seed, SIM_DRAWS)
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
    err = _Simulator(module, theta, consts, update, seed + 1, REFINE_DRAWS).mismatch(torch.tensor(short))
    ranked = sorted(zip(err.tolist(), short, strict=True), key=lambda t: t[0])[:count]
    out = torch.tensor([r for _, r in ranked], dtype=torch.long, device=estimate.device)
    return out, torch.tensor([e for e, _ in ranked], dtype=torch.float64)


__all__ = ["EXHAUSTIVE_LIMIT", "MAX_RECORDS", "SIM_DRAWS", "rank_label_rows"]
