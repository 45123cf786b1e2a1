"""Privacy audit benchmark (#18): the accountant's epsilon beside the canary lower bound and the one-shot
estimate, for epsilon 1, 4, 8, 16, in one run.

Per epsilon, on digits / mlp (10 clients, 30 rounds, the `fedleak audit-dp` defaults):
- dp-sgd, gradient canaries (white-box server, every step): ours;
- dp-sgd, record canaries (black-box, the final model's loss on mislabelled records): the obvious audit,
  what a membership attack on the released model gives;
- client-dp, canary clients (cosines with the final model delta, Andrew et al.);
- flower: the same canary clients in a Flower simulation under Flower's DifferentialPrivacyServerSideFixedClipping
  with client-dp's noise multiplier and clip (accountant: Flower's own RDP); ``--flower-broken E`` adds a row
  where the wrapper is told 10x the clients per round (its noise 10x too small), at claimed epsilon E.
Each row: canaries (included / held out), accountant epsilon, 95% lower bound, estimate, seconds.

    OMP_NUM_THREADS=1 FLWR_TELEMETRY_ENABLED=0 timeout 3600 .venv/bin/python bench/privacy_audit.py \
        [--kinds gradient,record,client,flower] [--flower-broken 1]
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

from fedleak.audit.dpaudit import DPAuditOptions, DPAuditResult, run_dp_audit

DEFENSE = {"gradient": "dp-sgd", "record": "dp-sgd", "client": "client-dp", "flower": "client-dp"}


def told_ten_times_the_clients(strategy: Any, z: float, clip: float, n: int) -> Any:
    """BROKEN on purpose: Flower's server-side wrapper told 10x the clients per round (noise 10x too small)."""
    from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping

    return DifferentialPrivacyServerSideFixedClipping(strategy, z, clip, 10 * n)


def row(kind: str, spec: str, r: DPAuditResult, seconds: float) -> str:
    c = r.counts
    est = "-" if r.epsilon_estimate is None else f"{r.epsilon_estimate:.2f}"
    flag = "  EXCEEDS" if r.bound_exceeds_epsilon else ""
    return (
        f"{kind:9} {spec:32} {c['total']:>6} ({c['included']}/{c['held_out']}) {r.epsilon:>10.2f} "
        f"{r.epsilon_lower_bound:>6.2f} {est:>8} {r.test_accuracy:>5.2f} {seconds:>5.0f}{flag}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epsilons", default="1,4,8,16")
    ap.add_argument("--kinds", default="gradient,record,client")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--flower-broken", type=float, default=None, help="claimed epsilon of the broken Flower row")
    args = ap.parse_args()
    kinds = args.kinds.split(",")
    if "flower" in kinds or args.flower_broken:
        import ray

        ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    print(
        f"{'canaries':9} {'defense':32} {'m (in/out)':>16} {'accountant':>10} {'bound':>6} {'estimate':>8} "
        f"{'acc':>5} {'s':>5}"
    )
    for e in [float(v) for v in args.epsilons.split(",")]:
        for kind in kinds:
            spec = f"{DEFENSE[kind]}:epsilon={e:g},delta=1e-5"
            t0 = time.perf_counter()
            flower = "server" if kind == "flower" else None
            canaries = "client" if kind == "flower" else kind
            r = run_dp_audit(DPAuditOptions(defense=spec, canaries=canaries, seed=args.seed, flower=flower))
            print(row(kind, spec, r, time.perf_counter() - t0), flush=True)
    if args.flower_broken:
        spec = f"client-dp:epsilon={args.flower_broken:g},delta=1e-5"
        t0 = time.perf_counter()
        opts = DPAuditOptions(
            defense=spec, canaries="client", seed=args.seed, flower="server", mechanism=told_ten_times_the_clients
        )
        r = run_dp_audit(opts)
        print(row("flower-10x", spec, r, time.perf_counter() - t0), flush=True)
        print(f"flower-10x: {r.verdict}")
    print(
        "bound: 95% lower bound on epsilon per canary (split-half Clopper-Pearson or one-run, Bonferroni); "
        "estimate: one-shot Gaussian fit (Andrew et al.), not a bound; 1 training run per row"
    )


if __name__ == "__main__":
    main()
