"""What auditing a Flower server costs a round: the server side of a FedAvg round (clients train, the strategy's
aggregation) on digits with the mlp, 3 clients of 32 records, batch 16, 2 rounds, timed three ways in one run:
no audit; the FedAvg replay (50 steps) inline in aggregate_train; the same replay on the worker thread (views to
disk), where the round returns at once and the findings are ready later. Quality printed beside the cost (PSNR
median of the replay against each client's records), so one cannot be bought with the other.

    OMP_NUM_THREADS=1 timeout 600 .venv/bin/python bench/flower_audit.py
"""

from __future__ import annotations

import statistics
import tempfile
import time

import torch

from fedleak.data import load
from fedleak.fl import client_update
from fedleak.flower.auditor import Auditor, Reply
from fedleak.metrics.image import image_scores
from fedleak.models import build

CLIENTS, RECORDS, ROUNDS, ITER = 3, 32, 2, 50


def federation(data, audit: Auditor | None):
    model = build("mlp", data.spec, seed=0)
    cfg = {"lr": 0.1, "batch-size": 16, "local-epochs": 1}
    round_s = []
    for rnd in range(1, ROUNDS + 1):
        t0 = time.perf_counter()
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if audit is not None:
            audit.begin_round(rnd, {c: (state, cfg) for c in range(CLIENTS)})
        replies, news = [], []
        for c in range(CLIENTS):
            model.load_state_dict(state)
            recs = data.subset(range(c * RECORDS, (c + 1) * RECORDS))
            u = client_update(model, recs, local_epochs=1, batch_size=16, lr=0.1, seed=rnd * 100 + c)
            new = {k: v + u.payload[k] if k in u.payload else v for k, v in u.global_state.items()}
            news.append(new)
            replies.append(Reply(c, new, {"num-examples": RECORDS, "partition-id": c}))
        if audit is not None:
            audit.observe(rnd, replies)
        model.load_state_dict({k: torch.stack([n[k].float() for n in news]).mean(0).to(state[k].dtype) for k in state})
        round_s.append(time.perf_counter() - t0)
    t1 = time.perf_counter()
    findings = audit.finish() if audit is not None else []
    return round_s, time.perf_counter() - t1, findings


def quality(data, findings) -> float | None:
    ps = []
    for f in findings:
        if hasattr(f.result, "pixels"):
            truth = data.pixels(range(f.client * RECORDS, (f.client + 1) * RECORDS))
            ps += image_scores(f.result.pixels.clamp(0, 1), truth)["psnr"].tolist()
    return statistics.median(ps) if ps else None


def main() -> None:
    torch.set_num_threads(1)
    data = load("digits")
    attack = [("fedavg", {"iterations": ITER})]
    runs = {
        "no audit": None,
        "inline": Auditor.for_model(build("mlp", data.spec, seed=0), data.spec, attacks=attack, attack_in="inline"),
        "worker thread": Auditor.for_model(
            build("mlp", data.spec, seed=0),
            data.spec,
            attacks=attack,
            attack_in="thread",
            views_dir=tempfile.mkdtemp(prefix="fedleak-bench-views-"),
        ),
    }
    print(f"digits mlp, {CLIENTS} clients x {RECORDS} records, {ROUNDS} rounds, fedavg replay {ITER} steps, CPU")
    print(f"{'audit':<14} {'round wall s (each)':<22} {'after-run wait s':>16} {'PSNR median dB':>15} {'targets':>8}")
    for name, aud in runs.items():
        rs, wait, findings = federation(data, aud)
        q = quality(data, findings)
        n = sum(len(f.result.pixels) for f in findings if hasattr(f.result, "pixels"))
        each = ", ".join(f"{r:.2f}" for r in rs)
        qs = f"{q:.1f}" if q is not None else "-"
        print(f"{name:<14} {each:<22} {wait:>16.2f} {qs:>15} {n:>8}")


if __name__ == "__main__":
    main()
