"""The cost of one evaluation of the gradient-matching objective and its gradient, by how many problems are
evaluated together, for the three ways the engine computes it: ``torch.func.vmap`` over one problem's objective
(one problem alone: the same objective on plain autograd), the stacked graph of ``stacked.py``, and the objective
written out for chain networks (``chain.py``; no autograd).

The objectives are the engine's own (``idlg`` on DLG's LeNet, one CIFAR-10 image per problem), taken from a run
of ``invert_batch``; the engines are timed in turns, one thread, CPU seconds, so that the machine's load falls on
all. Quality: the largest relative difference between each engine's objectives and gradients and vmap's (the same
arithmetic in another order). The engine takes the chain where the network is one, else the stacked graph for runs
of at most ``STACKED_MAX`` problems, else vmap.

    OMP_NUM_THREADS=1 .venv/bin/python bench/inversion_engine.py
    OMP_NUM_THREADS=1 .venv/bin/python bench/inversion_engine.py --problems 1,2,4 --calls 20
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

import fedleak
import fedleak.attacks.inversion.optimize as optimize
from fedleak.attacks.inversion import invert_batch
from fedleak.fl import client_update

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inversion import DEFAULT_DATA, first_of_each_class  # noqa: E402  (the bench's one choice of targets)

ENGINES = ("vmap", "stacked", "chain")


def evaluators(updates: list, engine: str):  # noqa: ANN201
    """The engine's ``evaluate`` for these updates and its start, with only ``engine`` (or vmap) allowed."""
    got = {}
    gm = optimize.GradientMatching
    real = gm._lbfgs, gm._stacked_fn, gm._chain_fn

    def grab(self, evaluate, x0, y0, T, R, nx, scale, lazy=False):  # noqa: ANN001, ANN202
        got["evaluate"], got["x0"] = evaluate, x0
        return x0, y0, torch.ones(T, dtype=torch.long)

    gm._lbfgs = grab
    if engine != "stacked":
        gm._stacked_fn = lambda self, prob, spec: None
    if engine != "chain":
        gm._chain_fn = lambda self, prob: None
    try:
        rec = invert_batch(updates, "idlg", iterations=1, restarts=1, seed=0)[0]
    finally:
        gm._lbfgs, gm._stacked_fn, gm._chain_fn = real
    if rec.extras["engine"] != engine:
        raise SystemExit(f"the engine took {rec.extras['engine']} where {engine} was asked (it disagreed with vmap)")
    return got["evaluate"], got["x0"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA), help="CIFAR-10 ImageFolder tarball or folder")
    p.add_argument("--problems", default="1,2,3,4,5,10", help="how many problems per evaluation")
    p.add_argument("--calls", type=int, default=40, help="evaluations timed per engine and size")
    p.add_argument("--shared", action="store_true", help="one network for all targets (fedleak invert's way)")
    args = p.parse_args()
    torch.set_num_threads(1)
    data = fedleak.data.load(f"imagefolder:{args.data}")
    idx = first_of_each_class(data)
    sizes = [int(s) for s in args.problems.split(",")]
    net = fedleak.models.build("lenet", data.spec, seed=0)
    updates = [
        client_update(
            net if args.shared else fedleak.models.build("lenet", data.spec, seed=k),
            data.subset([i]),
            batch_size=1,
            seed=k,
            client=k,
        )
        for k, i in enumerate(idx[: max(sizes)])
    ]
    optimize.STACKED_MAX = 10**6  # the stacked graph timed at every size, also where the engine would not use it
    engines = {name: evaluators(updates, name) for name in ENGINES}
    print(f"DLG's LeNet, CIFAR-10, one image per problem, {'one network' if args.shared else 'a network each'}; "
          f"ms per evaluation (CPU), {args.calls} calls each, timed in turns")  # fmt: skip
    print(f"{'problems':>8} {'vmap':>8} {'stacked':>8} {'chain':>8} {'vmap/chain':>10}  max rel. difference from vmap "
          "(objective, gradient): stacked; chain")  # fmt: skip
    for n in sizes:
        rows = torch.arange(n)
        x = engines["vmap"][1][:n]
        out = {k: ev(x, None, rows) for k, (ev, _) in engines.items()}
        diff = {
            k: [float((a - b).abs().max() / b.abs().max()) for a, b in zip(out[k][:2], out["vmap"][:2], strict=True)]
            for k in ("stacked", "chain")
        }
        spent = {k: 0.0 for k in engines}
        for _ in range(args.calls):
            for k, (ev, _) in engines.items():
                t = time.process_time()
                ev(x, None, rows)
                spent[k] += time.process_time() - t
        ms = {k: 1000 * v / args.calls for k, v in spent.items()}
        print(
            f"{n:>8} {ms['vmap']:>8.2f} {ms['stacked']:>8.2f} {ms['chain']:>8.2f} {ms['vmap'] / ms['chain']:>10.2f}  "
            f"{diff['stacked'][0]:.1e}, {diff['stacked'][1]:.1e}; {diff['chain'][0]:.1e}, {diff['chain'][1]:.1e}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
