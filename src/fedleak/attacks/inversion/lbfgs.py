"""L-BFGS for P independent problems at once, each with its own state: the same algorithm as
``torch.optim.LBFGS`` without line search (as DLG runs it), vectorised over a leading problem dimension.

Every problem keeps its own curvature history (a ring buffer), H0 scaling, step size, iteration count and its
own stopping tests; a problem that has stopped within a ``step`` keeps its iterate while the others go on.
``freeze`` drops problems for good: their state leaves the working set, so that they cost nothing, not even
their share of the history products.
Summing independent problems into one ``torch.optim.LBFGS`` instead couples them through a shared history and
converges far worse.

    >>> import torch
    >>> a = torch.tensor([[1.0, 2.0], [3.0, 0.5]], dtype=torch.float64)  # two problems: sum a (z - 1)^2
    >>> def f(z, rows):                     # rows: the problems z holds (only the active ones are evaluated)
    ...     ai = a if rows is None else a[rows]
    ...     return (ai * (z - 1) ** 2).sum(1), 2 * ai * (z - 1)
    >>> opt = BatchedLBFGS(torch.zeros(2, 2, dtype=torch.float64))
    >>> for _ in range(5):
    ...     _ = opt.step(f)
    >>> torch.allclose(opt.z, torch.ones(2, 2, dtype=torch.float64), atol=1e-4)
    True
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

# (z [p, D], rows: which of the P problems z holds, None for all) -> (loss [p], grad [p, D])
Closure = Callable[[Tensor, Tensor | None], tuple[Tensor, Tensor]]


class BatchedLBFGS:
    """Per-problem L-BFGS over ``z`` of shape (P, D). ``step(closure)`` is one call of
    ``torch.optim.LBFGS.step``: up to ``max_iter`` inner iterations, with PyTorch's defaults and stopping.
    Within a step, only the problems still active are evaluated (``closure(z[rows], rows)``), so problems that
    stop early cost nothing while others go on."""

    # per-problem state, indexed by working row; ``freeze`` shrinks all of them together
    _STATE = ("x", "H", "SY", "YY", "count", "head", "h_diag", "d", "t", "prev_g", "prev_loss", "n_iter", "loss")

    def __init__(
        self,
        z: Tensor,
        lr: float = 1.0,
        max_iter: int = 20,
        max_eval: int | None = None,
        tolerance_grad: float = 1e-7,
        tolerance_change: float = 1e-9,
        history_size: int = 100,
        reset_on_ascent: bool = True,
        history_dtype: torch.dtype | None = None,
    ) -> None:
        self.x = z.detach().clone()  # the working problems' iterates (all of them until ``freeze``)
        self.reset_on_ascent = reset_on_ascent
        self.lr, self.max_iter = lr, max_iter
        self.max_eval = max_eval if max_eval is not None else max_iter * 5 // 4
        self.tol_grad, self.tol_change, self.m = tolerance_grad, tolerance_change, history_size
        p, d = self.x.shape
        kw = {"dtype": z.dtype, "device": z.device}
        # the curvature pairs (s_i, y_i) by ring slot; the history may be kept in float32 (as PyTorch keeps
        # it for float32 parameters): it is read twice per inner iteration and dominates the memory traffic
        self.H = torch.zeros(p, self.m, 2, d, dtype=history_dtype or z.dtype, device=z.device)
        self.SY = torch.zeros(p, self.m, self.m, **kw)  # s_i . y_j, chronological (oldest first)
        self.YY = torch.zeros(p, self.m, self.m, **kw)  # y_i . y_j
        self.count = torch.zeros(p, dtype=torch.long, device=z.device)  # valid history entries
        self.head = torch.zeros(p, dtype=torch.long, device=z.device)  # next slot to write
        self.h_diag = torch.ones(p, **kw)
        self.d = torch.zeros(p, d, **kw)
        self.t = torch.zeros(p, **kw)
        self.prev_g = torch.zeros(p, d, **kw)
        self.prev_loss = torch.zeros(p, **kw)
        self.n_iter = torch.zeros(p, dtype=torch.long, device=z.device)
        self.total_iters = 0  # an upper bound on every problem's history length, known without a sync
        self.loss = torch.full((p,), float("inf"), **kw)
        self.rows = torch.arange(p, device=z.device)  # working row -> its own index (for the ring slots)
        self.work: Tensor | None = None  # working row -> problem, None while every problem works
        self._all, self._all_loss = self.x, self.loss  # every problem's iterate and loss as of the last freeze

    @property
    def z(self) -> Tensor:
        """Every problem's iterate (P, D): the frozen ones where they stopped."""
        return self.x if self.work is None else self._all.index_copy(0, self.work, self.x)

    def freeze(self, mask: Tensor) -> None:
        """Stop the problems in ``mask`` (P,) for good: they keep their iterate and leave the working set."""
        work = self.rows if self.work is None else self.work
        keep = (~mask.to(work.device)[work]).nonzero().flatten()
        if len(keep) == len(work):
            return
        self._all, self._all_loss = self.z, self._losses(self.loss)
        for name in self._STATE:
            setattr(self, name, getattr(self, name).index_select(0, keep))
        self.work = work.index_select(0, keep)
        self.rows = torch.arange(len(keep), device=work.device)

    def renew(self, problems: Tensor, z: Tensor) -> None:
        """Start the working problems ``problems`` (indices among the P) afresh from ``z`` (len, D): a new
        iterate with no curvature history, as at construction; the other problems keep their state."""
        work = self.rows if self.work is None else self.work
        where = torch.full((len(self._all),), -1, dtype=torch.long, device=work.device)
        where[work] = torch.arange(len(work), device=work.device)
        rows = where[problems.to(work.device)]
        if bool((rows < 0).any()):
            raise ValueError("renew: a frozen problem cannot start again")
        self.x = self.x.index_copy(0, rows, z.to(self.x))
        fresh = {"count": 0, "head": 0, "h_diag": 1, "n_iter": 0, "t": 0, "prev_loss": 0, "d": 0, "prev_g": 0}
        for name, value in (*fresh.items(), ("loss", float("inf"))):
            setattr(self, name, getattr(self, name).index_fill(0, rows, value))

    def _losses(self, loss: Tensor) -> Tensor:
        """Every problem's loss (P,) from the working rows' ``loss``: the frozen ones' as they stopped."""
        return loss if self.work is None else self._all_loss.index_copy(0, self.work, loss)

    def _evaluate(self, closure: Closure, rows: Tensor | None) -> tuple[Tensor, Tensor]:
        """The closure on the working rows ``rows`` (None: all), told which problems they are."""
        x = self.x if rows is None else self.x.index_select(0, rows)
        if self.work is not None:
            rows = self.work if rows is None else self.work.index_select(0, rows)
        return closure(x, rows)

    def _direction(self, g: Tensor, active: Tensor) -> Tensor:
        """Update the history with (s, y) where curvature allows, then -H g for each problem.

        H g uses the compact form of the L-BFGS inverse Hessian (Byrd, Nocedal and Schnabel 1994), the same
        matrix as PyTorch's two-loop recursion, in a few batched matrix products instead of 2m sequential
        vector operations: H = gI + [S gY] [[R^-T (D + g Y'Y) R^-1, -R^-T], [-R^-1, 0]] [S'; gY'] with
        R = triu(S'Y), D = diag(S'Y), g = s'y / y'y of the newest pair.

        The pairs themselves sit in a ring of slots (``H``; writing one never moves the others), while S'Y and
        Y'Y are kept in chronological order (oldest first), so that R is read where it lies: a full history
        shifts them by one place when a pair is added, and otherwise only the new row and column are written.
        (``bench/lbfgs.py``, 10 problems of 3,072 unknowns, 100 pairs: 1.3-1.8 CPU-s for 15 steps, where
        ring-ordered matrices reordered at every inner iteration took 2.4-2.5; ``torch.optim.LBFGS`` on one
        problem after another, 6-9.)
        """
        y = g - self.prev_g
        s = self.d * self.t[:, None]
        ys = (y * s).sum(1)
        add = active & (ys > 1e-10)
        m, p = self.m, g.shape[0]
        k = min(m, self.total_iters)  # slots ever written: the ring fills from slot 0, one pair per iteration
        slot = self.H.view(p * m, 2, -1)  # write the new pair at each adding problem's head
        flat = self.rows * m + self.head
        new = torch.stack([s, y], 1).to(self.H.dtype)
        slot.index_copy_(0, flat, torch.where(add[:, None, None], new, slot.index_select(0, flat)))
        hist = self.H[:, :k].reshape(p, 2 * k, -1)  # s_0, y_0, s_1, y_1, ... (a view)
        # one pass over the history: every product with s, y (the new pair) and g; as (3, D) x (D, 2k), the
        # shape that a BLAS streams fastest (about twice (2k, D) x (D, 3) on one core)
        vecs = torch.stack([s, y, g], 1).to(hist.dtype)
        prods = torch.bmm(vecs, hist.transpose(1, 2)).to(g.dtype).view(p, 3, k, 2)
        # the ring after the write: chronological position i of each problem lies in slot order[:, i]
        full = add & (self.count == m)
        self.head = torch.where(add, (self.head + 1) % m, self.head)
        self.count = torch.where(add, (self.count + 1).clamp(max=m), self.count)
        i = torch.arange(m, device=g.device)
        order = (self.head[:, None] - self.count[:, None] + i[None, :]) % m
        order_k = order.clamp(max=max(k - 1, 0))  # positions past count may point at unwritten slots: masked below

        def chrono(v: Tensor) -> Tensor:  # (p, k) by slot -> (p, m) by chronological position
            return torch.gather(v, 1, order_k)

        sy_row, sy_col, yy_new = chrono(prods[:, 0, :, 1]), chrono(prods[:, 1, :, 0]), chrono(prods[:, 1, :, 1])
        s_g, y_g = chrono(prods[:, 2, :, 0]), chrono(prods[:, 2, :, 1])
        # a full history drops its oldest pair: S'Y and Y'Y move up and left by one place
        if bool(full.all()):
            self.SY[:, :-1, :-1] = self.SY[:, 1:, 1:].clone()
            self.YY[:, :-1, :-1] = self.YY[:, 1:, 1:].clone()
        elif bool(full.any()):
            fi = full.nonzero().flatten()
            self.SY[fi, :-1, :-1] = self.SY[fi, 1:, 1:]  # advanced indexing reads a copy: no overlap
            self.YY[fi, :-1, :-1] = self.YY[fi, 1:, 1:]
        # the new pair's row and column, at its chronological place count - 1
        rows = add.nonzero().flatten()
        if len(rows):
            at = self.count.index_select(0, rows) - 1
            self.SY[rows, at, :] = sy_row.index_select(0, rows)  # s_new . y_j
            self.SY[rows, :, at] = sy_col.index_select(0, rows)  # s_i . y_new
            self.YY[rows, at, :] = yy_new.index_select(0, rows)
            self.YY[rows, :, at] = yy_new.index_select(0, rows)
        yy = torch.where(add, (y * y).sum(1), torch.ones_like(ys))
        self.h_diag = torch.where(add, ys / yy, self.h_diag)
        gam = self.h_diag
        # R is read from its upper triangle (a triangular solve does not look below the diagonal); positions
        # past count (before the history fills, or after a reset) are masked out so that they add nothing
        if bool((self.count == m).all()):
            r, diag, a, b = self.SY, torch.diagonal(self.SY, dim1=1, dim2=2), s_g, gam[:, None] * y_g
            yyo, valid = self.YY, None
        else:
            valid = (i[None, :] < self.count[:, None]).to(g.dtype)
            both = valid[:, :, None] * valid[:, None, :]
            r = self.SY * both + torch.diag_embed(1 - valid)
            diag, a, b = torch.diagonal(self.SY, dim1=1, dim2=2) * valid, s_g * valid, gam[:, None] * y_g * valid
            yyo = self.YY * both
        u = torch.linalg.solve_triangular(r, a[..., None], upper=True)
        inner = diag[:, :, None] * u + gam[:, None, None] * torch.bmm(yyo, u) - b[..., None]
        if valid is not None:
            inner = inner * valid[..., None]
        p1 = torch.linalg.solve_triangular(r.transpose(1, 2), inner, upper=False)[..., 0]
        # back to slot order for the pass over the history (position i's coefficient goes to slot order[:, i])
        coef = torch.zeros(p, m, 2, dtype=g.dtype, device=g.device)
        both_coef = torch.stack([p1, -gam[:, None] * u[..., 0]], 2)
        if valid is not None:
            both_coef = both_coef * valid[..., None]
        coef.scatter_(1, order[..., None].expand(-1, -1, 2), both_coef)
        hg = gam[:, None] * g + torch.bmm(coef[:, :k].reshape(p, 1, 2 * k).to(hist.dtype), hist)[:, 0].to(g.dtype)
        return -hg

    @torch.no_grad()
    def step(self, closure: Closure) -> Tensor:
        """One ``LBFGS.step``; returns each problem's loss at the start of the step (P,)."""
        if len(self.x) == 0:
            return self._losses(self.loss)
        loss, g = self._evaluate(closure, None)
        loss, g = loss.to(self.loss.dtype), g.to(self.x.dtype)
        orig_loss = loss
        active = ~(g.abs().amax(1) <= self.tol_grad)
        for it in range(self.max_iter):
            self.n_iter += active.long()
            first = self.n_iter == 1
            if self.total_iters > 0:
                d = self._direction(g, active & ~first)
            else:
                d = -g
            d = torch.where(first[:, None], -g, d)
            self.d = torch.where(active[:, None], d, self.d)
            self.prev_g = torch.where(active[:, None], g, self.prev_g)
            self.prev_loss = torch.where(active, loss, self.prev_loss)
            t_first = torch.clamp(1.0 / g.abs().sum(1), max=1.0) * self.lr
            t = torch.where(first, t_first, torch.full_like(t_first, self.lr))
            self.t = torch.where(active, t, self.t)
            self.total_iters += 1
            gtd = (g * self.d).sum(1)
            # safeguard (not in PyTorch): a problem whose curvature history gives no descent direction
            # (rounding in float32 replays) forgets its history and restarts from steepest descent
            reset = active & ~first & (gtd > 0)
            if self.reset_on_ascent:
                self.count = torch.where(reset, torch.zeros_like(self.count), self.count)
                self.h_diag = torch.where(reset, torch.ones_like(self.h_diag), self.h_diag)
                self.d = torch.where(reset[:, None], -g, self.d)
                self.t = torch.where(reset, t_first, self.t)
                gtd = (g * self.d).sum(1)
            active = active & ~(gtd > -self.tol_change)
            self.x = self.x + torch.where(active[:, None], self.d * self.t[:, None], torch.zeros_like(self.x))
            if it == self.max_iter - 1 or it + 2 > self.max_eval:
                break
            rows = active.nonzero().flatten()  # one sync per inner iteration: evaluate only active problems
            if len(rows) == 0:
                break
            new_loss, new_g = self._evaluate(closure, rows)
            loss = loss.index_copy(0, rows, new_loss.to(loss.dtype))
            g = g.index_copy(0, rows, new_g.to(g.dtype))
            stop = (
                (g.abs().amax(1) <= self.tol_grad)
                | ((self.d * self.t[:, None]).abs().amax(1) <= self.tol_change)
                | ((loss - self.prev_loss).abs() < self.tol_change)
            )
            active = active & ~stop
        self.loss = loss
        return self._losses(orig_loss)


__all__ = ["BatchedLBFGS"]
