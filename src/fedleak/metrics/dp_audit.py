"""Epsilon from canaries: a valid lower bound and the one-shot estimate, never confused (pure maths).

A canary audit plants m canaries, each included in the training with probability 1/2 by a seeded coin, and
scores every canary from what the server sees (higher = more likely included). From the scores:

- :func:`canary_lower_bound`: a statistically valid lower bound on the epsilon of the mechanism **with
  respect to one canary** (the unit the DP guarantee protects: a record for DP-SGD, a client for
  client-level DP), at ``confidence``. It is the larger of two bounds, each at 1 - (1 - confidence)/2
  (Bonferroni, so the larger holds at ``confidence``):

  * Clopper-Pearson on the canary guesses (Jagielski et al. 2020): the threshold is chosen on a random half
    of the canaries and the bound computed on the other half, so the choice costs no confidence;
  * the one-run bound of Steinke, Nasr, Jagielski 2023 (:func:`fedleak.metrics.privacy.one_run_lower_bound`).

- :func:`one_shot_estimate`: the estimate of Andrew et al. (ICLR 2024): Gaussian fits of the included and the
  held-out canaries' scores (cosines), read as a Gaussian mechanism with mu = (mean_in - mean_out) / sd; its
  epsilon at delta (:func:`gaussian_epsilon`). An estimate, not a bound: it can exceed the true epsilon.

    >>> round(gaussian_epsilon(1.0, 1e-5), 2)            # mu = 1 Gaussian DP at delta 1e-5
    4.38
    >>> round(gaussian_delta(gaussian_epsilon(2.0, 1e-6), 2.0), 8)
    1e-06
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fedleak.errors import NonFiniteError
from fedleak.metrics.privacy import one_run_lower_bound, scores_lower_bound


def gaussian_delta(epsilon: float, mu: float) -> float:
    """delta(epsilon) of mu-Gaussian DP (Dong, Roth, Su 2019): Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2)."""
    from scipy.stats import norm

    if mu <= 0:
        return 0.0
    a = norm.cdf(-epsilon / mu + mu / 2)
    b = math.exp(epsilon + norm.logcdf(-epsilon / mu - mu / 2)) if epsilon < 700 else 0.0
    return float(max(0.0, a - b))


def gaussian_epsilon(mu: float, delta: float) -> float:
    """The smallest epsilon with delta(epsilon) <= ``delta`` for mu-Gaussian DP (0 when mu <= 0)."""
    if mu <= 0 or gaussian_delta(0.0, mu) <= delta:
        return 0.0
    lo, hi = 0.0, 1.0
    while gaussian_delta(hi, mu) > delta:
        lo, hi = hi, 2 * hi
    for _ in range(80):
        mid = (lo + hi) / 2
        if gaussian_delta(mid, mu) > delta:
            lo = mid
        else:
            hi = mid
    return hi


def _check(scores: np.ndarray, included: np.ndarray) -> None:
    if scores.shape != included.shape or scores.ndim != 1:
        raise ValueError("scores and included must be 1-d arrays of the same length")
    if not np.isfinite(scores).all():
        raise NonFiniteError("canary scores hold NaN or infinite values: training diverged; nothing to audit")


def one_shot_estimate(scores: np.ndarray | list[float], included: np.ndarray | list[bool], delta: float) -> dict:
    """Andrew et al.'s one-shot epsilon estimate from included and held-out canary scores.

    Fits N(mean_in, sd_in) and N(mean_out, sd_out); mu = (mean_in - mean_out) / sqrt((sd_in^2 + sd_out^2)/2)
    and the estimate is the epsilon at ``delta`` of mu-Gaussian DP. Labelled an estimate: it assumes the
    scores are Gaussian and carries no confidence.
    """
    s, inc = np.asarray(scores, dtype=float), np.asarray(included, dtype=bool)
    _check(s, inc)
    a, b = s[inc], s[~inc]
    if len(a) < 2 or len(b) < 2:
        raise ValueError("the one-shot estimate needs at least 2 included and 2 held-out canaries")
    sd = math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    mu = float((a.mean() - b.mean()) / sd) if sd > 0 else math.inf
    return {
        "epsilon_estimate": gaussian_epsilon(mu, delta) if math.isfinite(mu) else math.inf,
        "mu": mu,
        "mean_included": float(a.mean()),
        "mean_held_out": float(b.mean()),
        "sd_included": float(a.std(ddof=1)),
        "sd_held_out": float(b.std(ddof=1)),
        "delta": delta,
        "method": "one-shot estimate (Andrew et al. ICLR 2024): Gaussian fit of included vs held-out scores",
    }


def canary_lower_bound(
    scores: np.ndarray | list[float],
    included: np.ndarray | list[bool],
    delta: float,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """The larger of the Clopper-Pearson (split-half threshold) and one-run lower bounds, each at
    1 - (1 - confidence)/2, so that the reported bound holds at ``confidence`` (see the module docstring).

    >>> rng = np.random.default_rng(0)
    >>> inc = rng.random(2000) < 0.5
    >>> canary_lower_bound(rng.normal(size=2000), inc, 1e-5)["epsilon_lower_bound"]     # no signal
    0.0
    >>> canary_lower_bound(rng.normal(size=2000) + 8 * inc, inc, 1e-5)["epsilon_lower_bound"] > 3
    True
    """
    s, inc = np.asarray(scores, dtype=float), np.asarray(included, dtype=bool)
    _check(s, inc)
    each = 1 - (1 - confidence) / 2
    cp = scores_lower_bound(s, inc, delta, each, seed)
    one = one_run_lower_bound(s, inc, delta, each)
    lb = max(cp["epsilon_lower_bound"], one["epsilon_lower_bound"])
    return {
        "epsilon_lower_bound": lb,
        "clopper_pearson": cp,
        "one_run": one,
        "confidence": confidence,
        "delta": delta,
        "bounds": "epsilon of the mechanism for one canary (one record or one client), at the stated delta",
    }
