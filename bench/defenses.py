"""Benchmark: the DP-SGD client gradient (Opacus per-sample gradients, clipped and noised in one pass) beside
the slow, obvious version (one backward per sample), in the same process so the ratio holds on a noisy
machine; checks that both give the same clipped mean, and prints the accountant's epsilon beside.

    .venv/bin/python bench/defenses.py
"""

from __future__ import annotations

import time

import torch

import fedleak
from fedleak.defenses import DPSGDTrainer


def slow(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, clip: float) -> list[torch.Tensor]:
    params = [p for p in model.parameters() if p.requires_grad]
    total = [torch.zeros_like(p) for p in params]
    for i in range(len(x)):
        g = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1]), params)
        f = min(1.0, clip / (float(torch.sqrt(sum((t**2).sum() for t in g))) + 1e-6))
        total = [a + f * b for a, b in zip(total, g, strict=True)]
    return [t / len(x) for t in total]


def main() -> None:
    data = fedleak.data.load("digits")
    for spec, b in (("mlp", 256), ("lenet", 64)):
        model = fedleak.models.build(spec, data.spec, seed=0)
        x, y = data.subset(range(b)).tensors()
        dp = DPSGDTrainer(noise=0.0, clip=1.0)
        dp.gradient(model, x, y, torch.Generator())  # warm-up (Opacus import, hooks)
        t0 = time.perf_counter()
        fast = dp.gradient(model, x, y, torch.Generator())
        t_fast = time.perf_counter() - t0
        t0 = time.perf_counter()
        ref = slow(model, x, y, 1.0)
        t_slow = time.perf_counter() - t0
        err = max(float((a - r).abs().max()) for a, r in zip(fast.values(), ref, strict=True))
        print(
            f"{spec:<6} B={b:<4} opacus {b / t_fast:8.0f} samples/s   loop {b / t_slow:8.0f} samples/s"
            f"   speed-up {t_slow / t_fast:5.1f}x   max |difference| {err:.1e}"
        )
    noisy = DPSGDTrainer(target_epsilon=8.0, delta=1e-5)
    model = fedleak.models.build("mlp", data.spec, seed=0)
    x, y = data.subset(range(500)).tensors()
    t0 = time.perf_counter()
    steps = noisy.train(model, x, y, fedleak.fl.TrainSpec(epochs=5, batch_size=64), torch.Generator().manual_seed(0))
    p = noisy.privacy()
    print(
        f"dp-sgd: {steps} steps in {time.perf_counter() - t0:.1f} s; noise {p['noise_multiplier']:.3f}, "
        f"epsilon {p['epsilon']:.3f} (RDP), {p['epsilon_by_accountant']['prv']:.3f} (PRV) at delta 1e-5"
    )


if __name__ == "__main__":
    main()
