"""Empirical epsilon: Clopper-Pearson intervals cover, lower bounds never exceed the true epsilon of a known
mechanism (randomized response), are positive for a leaky one, and one-run auditing behaves the same."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedleak.metrics.privacy import (
    audit_privacy,
    clopper_pearson,
    epsilon_from_rates,
    epsilon_lower_bound,
    one_run_lower_bound,
    scores_lower_bound,
)


def test_clopper_pearson_covers_the_true_proportion():
    rng = np.random.default_rng(0)
    p, n, trials = 0.07, 200, 400
    ks = rng.binomial(n, p, size=trials)
    hits = sum(lo <= p <= hi for lo, hi in (clopper_pearson(int(k), n) for k in ks))
    assert hits / trials >= 0.94  # exact intervals are conservative: coverage at least 95% (minus sampling)
    lo, hi = clopper_pearson(0, 100)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / 100), rel=1e-6)  # closed form at k = 0


def test_rates_to_epsilon():
    assert epsilon_from_rates(0.5, 0.5) == 0.0
    assert epsilon_from_rates(math.e / (1 + math.e), 1 / (1 + math.e)) == pytest.approx(1.0)
    assert epsilon_from_rates(0.3, 0.0) == math.inf
    assert epsilon_lower_bound(250, 500, 250, 500) == 0.0


def _randomized_response(eps, n, rng):
    """Members answer 1 with probability e^eps/(1+e^eps), non-members with 1/(1+e^eps): exactly eps-DP."""
    p = math.exp(eps) / (1 + math.exp(eps))
    member = rng.random(n) < 0.5
    answer = np.where(member, rng.random(n) < p, rng.random(n) < 1 - p)
    return answer + 1e-3 * rng.random(n), member  # tiny jitter: scores, not ties


@pytest.mark.parametrize("eps", [0.5, 2.0])
def test_lower_bounds_stay_below_a_known_epsilon_and_are_positive(eps):
    rng = np.random.default_rng(1)
    cp, one = [], []
    for _ in range(20):
        s, m = _randomized_response(eps, 2000, rng)
        cp.append(scores_lower_bound(s, m, seed=int(rng.integers(1 << 30)))["epsilon_lower_bound"])
        one.append(one_run_lower_bound(s, m)["epsilon_lower_bound"])
    # each bound holds with 95% confidence: at most a few of 20 may exceed; none by much
    assert sum(c > eps for c in cp) <= 3 and max(cp) < eps * 1.3
    assert sum(o > eps for o in one) <= 3 and max(one) < eps * 1.3
    assert np.median(cp) > 0.5 * eps and np.median(one) > 0.5 * eps  # and the bounds are not vacuous


def test_no_leak_no_bound_and_violations_are_flagged():
    rng = np.random.default_rng(2)
    s, m = rng.random(1000), rng.random(1000) < 0.5
    assert scores_lower_bound(s, m)["epsilon_lower_bound"] < 0.3
    leaky = m + 0.01 * rng.random(1000)  # scores reveal membership perfectly
    with pytest.warns(RuntimeWarning, match="exceeds the accountant"):
        out = audit_privacy(leaky, m, epsilon=1.0, delta=1e-5)
    assert out["bound_exceeds_epsilon"] and out["epsilon_lower_bound"] > 3
    assert out["epsilon_lower_bound_one_run"]["epsilon_lower_bound"] > 3
    ok = audit_privacy(leaky, m, epsilon=20.0, delta=1e-5)
    assert not ok["bound_exceeds_epsilon"]
