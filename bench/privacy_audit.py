"""Privacy audit benchmark (#18): the accountant's epsilon beside the canary lower bound and the one-shot
estimate, for epsilon 1, 4, 8, 16, in one run.

Per epsilon, on digits / mlp (10 clients, 30 rounds, the `fedleak audit-dp` defaults):
- dp-sgd, gradient canaries (white-box server, every step): ours;
- dp-sgd, record canaries (black-box, the final model's loss on mislabelled records): the obvious audit,
  what a membership attack on the released model gives;
- client-dp, canary clients (cosines with the final model delta, Andrew et al.).
Each row: canaries (included / held out), accountant epsilon, 95% lower bound, estimate, seconds.

    OMP_NUM_THREADS=1 timeout 1200 .venv/bin/python bench/privacy_audit.py [--kinds gradient,record,client]
"""

from __future__ import annotations

import argparse
import time

from fedleak.audit.dpaudit import DPAuditOptions, run_dp_audit

DEFENSE = {"gradient": "dp-sgd", "record": "dp-sgd", "client": "client-dp"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epsilons", default="1,4,8,16")
    ap.add_argument("--kinds", default="gradient,record,client")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(
        f"{'canaries':9} {'defense':32} {'m (in/out)':>16} {'accountant':>10} {'bound':>6} {'estimate':>8} "
        f"{'acc':>5} {'s':>5}"
    )
    for e in [float(v) for v in args.epsilons.split(",")]:
        for kind in args.kinds.split(","):
            spec = f"{DEFENSE[kind]}:epsilon={e:g},delta=1e-5"
            t0 = time.perf_counter()
            r = run_dp_audit(DPAuditOptions(defense=spec, canaries=kind, seed=args.seed))
            c = r.counts
            est = "-" if r.epsilon_estimate is None else f"{r.epsilon_estimate:.2f}"
            flag = "  EXCEEDS" if r.bound_exceeds_epsilon else ""
            print(
                f"{kind:9} {spec:32} {c['total']:>6} ({c['included']}/{c['held_out']}) {r.epsilon:>10.2f} "
                f"{r.epsilon_lower_bound:>6.2f} {est:>8} {r.test_accuracy:>5.2f} {time.perf_counter() - t0:>5.0f}"
                f"{flag}",
                flush=True,
            )
    print(
        "bound: 95% lower bound on epsilon per canary (split-half Clopper-Pearson or one-run, Bonferroni); "
        "estimate: one-shot Gaussian fit (Andrew et al.), not a bound; 1 training run per row"
    )


if __name__ == "__main__":
    main()
