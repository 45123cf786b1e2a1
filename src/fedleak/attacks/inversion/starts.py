"""Which start each row of the L-BFGS engine works on, when a target's restarts are tried in turn.

T targets with R restarts each are P = T x R problems (restart r of target t is problem t * R + r). Run all at
once, the optimiser holds every problem and each target keeps its lowest after ``select`` steps. Tried in turn
(``MatchConfig.alive_below``), it holds one row per target: a row's start is checked after ``select`` steps of
its own; one at most ``alive_below`` of its update's squared norm is kept (the row goes on with it), any other is
given up for the target's next restart, and after the last the target goes on from the lowest it tried (its
iterate at the check, the curvature history started afresh). Each start kept runs the full budget of steps
from its own start.

    >>> import torch
    >>> s = StartsInTurn.new(T=2, R=3, in_turn=True)
    >>> s.prob_of.tolist(), s.tried.tolist()   # one start per target: restart 0 of each
    ([0, 3], [1, 1])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from fedleak.attacks.inversion.lbfgs import BatchedLBFGS


@dataclass
class StartsInTurn:
    """Per optimiser row: the problem it works on, its steps since its start, and whether its start is kept."""

    R: int
    prob_of: Tensor  # (n,) the problem each row works on
    age: Tensor  # (n,) steps of the row's start, the budget's count (the lowest taken up again keeps its own)
    since: Tensor  # (n,) steps since the row's iterate last changed hands, the stopping rules' count
    settled: Tensor  # (n,) the row's start is kept (always, when all run at once)
    fresh: Tensor  # (n,) the row started afresh since the last step (its stopping rules forget the last start)
    tried: Tensor  # (T,) starts tried per target
    kept: Tensor  # (n,) in turn: the lowest objective of a start given up so far, and its problem
    kept_prob: Tensor

    @classmethod
    def new(cls, T: int, R: int, in_turn: bool) -> StartsInTurn:
        prob_of = torch.arange(T) * R if in_turn else torch.arange(T * R)
        n = len(prob_of)
        return cls(
            R=R,
            prob_of=prob_of,
            age=torch.zeros(n, dtype=torch.long),
            since=torch.zeros(n, dtype=torch.long),
            settled=torch.full((n,), not in_turn),
            fresh=torch.zeros(n, dtype=torch.bool),
            tried=torch.full((T,), 1 if in_turn else R),
            kept=torch.full((n,), float("inf"), dtype=torch.float64),
            kept_prob=prob_of.clone(),
        )

    def check(
        self,
        opt: BatchedLBFGS,
        closure: Callable[[Tensor, Tensor | None], tuple[Tensor, Tensor]],
        due: Tensor,
        z0: Tensor,
        out: Tensor,
        alive: Tensor,
        select: int,
    ) -> None:
        """The rows ``due`` have run ``select`` steps from their start: keep each start whose objective is at most
        ``alive`` (per row), or give it up (its iterate to ``out``) for the target's next start from ``z0``."""
        z_due = opt.z.index_select(0, due.to(opt.z.device))
        loss = torch.nan_to_num(closure(z_due, due.to(opt.z.device))[0].cpu(), nan=float("inf"))
        ok = loss <= alive[due]
        self.settled[due[ok]] = True
        for j in (~ok).nonzero().flatten().tolist():
            row, p = int(due[j]), int(self.prob_of[due[j]])
            out[p] = z_due[j].to(out)
            if loss[j] < self.kept[row]:
                self.kept[row], self.kept_prob[row] = loss[j], p
            last = p % self.R == self.R - 1
            nxt = int(self.kept_prob[row]) if last else p + 1
            if last and nxt == p:  # the last start is the lowest tried: it simply goes on
                self.settled[row] = True
                continue
            opt.renew(torch.tensor([row]), (out[nxt] if last else z0[nxt])[None])
            self.prob_of[row] = nxt
            self.fresh[row] = True
            self.settled[row] = last
            self.age[row] = select if last else 0  # the lowest goes on where it was: its budget stays the same
            self.since[row] = 0
            if not last:
                self.tried[p // self.R] += 1


__all__ = ["StartsInTurn"]
