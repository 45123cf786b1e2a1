"""L-BFGS bookkeeping beside PyTorch's: fedleak's per-problem batched L-BFGS (``BatchedLBFGS``, what the
idlg/dlg presets run) against ``torch.optim.LBFGS`` run on one problem after another (the iDLG authors' way),
on P independent problems whose objective costs next to nothing, so that the CPU seconds are the optimiser's own.

The problems are ill-conditioned quadratics of DLG's size (a CIFAR-10 image: D = 3,072), 100 curvature pairs,
20 inner iterations per step, no line search: every step fills the history and moves every problem. Quality:
the largest difference between the two optimisers' iterates (the algorithms are the same up to rounding).

    OMP_NUM_THREADS=1 .venv/bin/python bench/lbfgs.py
    OMP_NUM_THREADS=1 .venv/bin/python bench/lbfgs.py --problems 3 --steps 20
"""

from __future__ import annotations

import argparse
import time

import torch

from fedleak.attacks.inversion.lbfgs import BatchedLBFGS


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--problems", type=int, default=10, help="independent problems P (the 10 targets of the checks)")
    p.add_argument("--dim", type=int, default=3072, help="unknowns per problem (3,072: one CIFAR-10 image)")
    p.add_argument("--steps", type=int, default=15, help="optimiser steps (each up to 20 inner iterations)")
    p.add_argument("--history", type=int, default=100, help="curvature pairs kept (PyTorch's default 100)")
    p.add_argument("--no-torch", action="store_true", help="time the batched optimiser alone")
    args = p.parse_args()
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    P, D = args.problems, args.dim
    curv = torch.logspace(-2, 2, D, dtype=torch.float64)[torch.randperm(D, generator=gen)]
    a = curv * torch.rand(P, 1, generator=gen, dtype=torch.float64).add(0.5)  # (P, D), one spectrum per problem
    z0 = torch.randn(P, D, generator=gen, dtype=torch.float64)
    kw = {"lr": 1.0, "history_size": args.history, "tolerance_change": 1e-30, "tolerance_grad": 1e-30}

    evals = {"batched": 0, "torch": 0}

    def f(z: torch.Tensor, rows: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        ai = a if rows is None else a.index_select(0, rows)
        evals["batched"] += len(z)
        return (ai * z * z).sum(1), 2 * ai * z

    opt = BatchedLBFGS(z0.clone(), history_dtype=torch.float32, **kw)
    t = time.process_time()
    for _ in range(args.steps):
        opt.step(f)
    batched = time.process_time() - t

    if args.no_torch:
        print(f"batched {batched:.2f}")
        return 0
    ref = []
    t = time.process_time()
    for i in range(P):
        z = z0[i].float().clone().requires_grad_(True)  # float32 as the replay, so the history is float32 too
        o = torch.optim.LBFGS([z], **kw)

        def closure(z=z, i=i, o=o) -> torch.Tensor:
            o.zero_grad()
            loss = (a[i].float() * z * z).sum()
            loss.backward()
            evals["torch"] += 1
            return loss

        for _ in range(args.steps):
            o.step(closure)
        ref.append(z.detach().double())
    looped = time.process_time() - t
    diff = float((opt.z - torch.stack(ref)).abs().max() / z0.abs().max())
    print(f"P = {P} problems of D = {D}, {args.history} pairs, {args.steps} steps; one thread, CPU seconds")
    print(
        f"  batched L-BFGS (fedleak):      {batched:6.2f} s, {1e3 * batched / evals['batched']:.3f} ms per problem-iter"
    )
    print(f"  torch.optim.LBFGS one by one: {looped:6.2f} s, {1e3 * looped / evals['torch']:.3f} ms per problem-iter")
    print(f"  ratio batched / looped: {batched / looped:.2f}; iterates' largest difference / |z0|: {diff:.1e}")
    print(
        f"  final mean objective: batched {float(f(opt.z, None)[0].mean()):.3e}, "
        f"looped {float(f(torch.stack(ref), None)[0].mean()):.3e}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
