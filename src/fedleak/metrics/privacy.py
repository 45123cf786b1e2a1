"""Epsilon that attacks prove: empirical lower bounds on epsilon from membership guesses.

- :func:`epsilon_lower_bound`: from a membership attack's true and false positives, with Clopper-Pearson
  intervals (Jagielski et al. 2020; Nasr et al. 2021): an (epsilon, delta)-DP mechanism has
  TPR <= e^eps FPR + delta and 1 - FPR <= e^eps (1 - TPR) + delta, so
  eps >= max(log((TPR_lo - delta) / FPR_hi), log((1 - FPR_hi - delta) / (1 - TPR_lo))).
- :func:`scores_lower_bound`: the same from raw scores; the threshold is chosen on one random half and the
  bound computed on the other, so the choice costs no confidence.
- :func:`one_run_lower_bound`: one-run auditing (Steinke, Nasr, Jagielski 2023): m canaries, each included
  with probability 1/2; the auditor guesses "in" for the top k+ scores and "out" for the bottom k-. Under
  eps-DP the number of correct guesses is dominated by Binomial(r, e^eps / (1 + e^eps)).

    >>> lo, hi = clopper_pearson(5, 10)
    >>> round(lo, 3), round(hi, 3)
    (0.187, 0.813)
    >>> epsilon_lower_bound(tp=500, n_pos=500, fp=0, n_neg=500) > 4     # perfect separation, 500 + 500
    True
    >>> epsilon_lower_bound(tp=50, n_pos=500, fp=50, n_neg=500)         # a coin: nothing proven
    0.0
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided Clopper-Pearson interval for a binomial proportion k/n at ``confidence``."""
    from scipy.stats import beta

    if n <= 0:
        return 0.0, 1.0
    a = 1.0 - confidence
    lo = 0.0 if k <= 0 else float(beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k >= n else float(beta.ppf(1 - a / 2, k + 1, n - k))
    return lo, hi


def epsilon_from_rates(tpr: float, fpr: float, delta: float = 0.0) -> float:
    """The epsilon that an attack with these exact rates would prove (no confidence interval)."""
    cands = [0.0]
    if tpr - delta > 0 and fpr > 0:
        cands.append(math.log((tpr - delta) / fpr))
    if 1 - fpr - delta > 0 and tpr < 1:
        cands.append(math.log((1 - fpr - delta) / (1 - tpr)))
    if (fpr == 0 and tpr > delta) or (tpr == 1 and fpr < 1 - delta):
        return math.inf
    return max(cands)


def epsilon_lower_bound(
    tp: int, n_pos: int, fp: int, n_neg: int, delta: float = 0.0, confidence: float = 0.95
) -> float:
    """Epsilon lower bound at ``confidence`` from TP of ``n_pos`` members and FP of ``n_neg`` non-members.

    The two proportions each get a Clopper-Pearson interval at 1 - (1 - confidence)/2 (so that both hold
    together with probability ``confidence``); the bound uses the pessimistic ends: TPR low, FPR high.
    """
    c = 1 - (1 - confidence) / 2
    tpr_lo, _ = clopper_pearson(tp, n_pos, 2 * c - 1)
    _, fpr_hi = clopper_pearson(fp, n_neg, 2 * c - 1)
    return max(0.0, epsilon_from_rates(tpr_lo, fpr_hi, delta))


def _cp_bounds(tp: np.ndarray, n_pos: int, fp: np.ndarray, n_neg: int, delta: float, confidence: float) -> np.ndarray:
    """Vectorised :func:`epsilon_lower_bound` over arrays of TP and FP counts."""
    from scipy.stats import beta

    a = (1 - confidence) / 2  # per proportion, two-sided
    with np.errstate(all="ignore"):
        tpr_lo = np.where(tp > 0, beta.ppf(a / 2, tp, n_pos - tp + 1), 0.0)
        fpr_hi = np.where(fp < n_neg, beta.ppf(1 - a / 2, fp + 1, n_neg - fp), 1.0)
        e1 = np.log(np.clip(tpr_lo - delta, 1e-300, None) / np.clip(fpr_hi, 1e-300, None))
        e1 = np.where(tpr_lo - delta > 0, e1, 0.0)
        e2 = np.log(np.clip(1 - fpr_hi - delta, 1e-300, None) / np.clip(1 - tpr_lo, 1e-300, None))
        e2 = np.where(1 - fpr_hi - delta > 0, e2, 0.0)
    return np.maximum(0.0, np.maximum(e1, e2))


def _best_threshold(scores: np.ndarray, member: np.ndarray, delta: float, confidence: float) -> float:
    """The threshold (score >= t means member) with the highest Clopper-Pearson bound on these records."""
    order = np.argsort(-scores, kind="stable")
    s, m = scores[order], member[order]
    tp, fp = np.cumsum(m), np.cumsum(~m)
    last = np.flatnonzero(np.r_[s[1:] != s[:-1], True])  # only cut between distinct scores
    if len(last) == 0:
        return math.inf
    e = _cp_bounds(tp[last], int(m.sum()), fp[last], int((~m).sum()), delta, confidence)
    return float(s[last[int(np.argmax(e))]])


def scores_lower_bound(
    scores: np.ndarray | list[float],
    is_member: np.ndarray | list[bool],
    delta: float = 0.0,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Clopper-Pearson epsilon lower bound from membership scores (higher = more likely a member).

    The records are split at random in two halves: the threshold is chosen on the first and the bound is
    computed on the second, so that the bound holds at ``confidence``.
    """
    s = np.asarray(scores, dtype=float)
    m = np.asarray(is_member, dtype=bool)
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(s))
    a, b = pick[: len(s) // 2], pick[len(s) // 2 :]
    t = _best_threshold(s[a], m[a], delta, confidence)
    guess = s[b] >= t
    tp, fp = int((guess & m[b]).sum()), int((guess & ~m[b]).sum())
    n_pos, n_neg = int(m[b].sum()), int((~m[b]).sum())
    return {
        "epsilon_lower_bound": epsilon_lower_bound(tp, n_pos, fp, n_neg, delta, confidence),
        "threshold": t,
        "tpr": tp / max(1, n_pos),
        "fpr": fp / max(1, n_neg),
        "members": n_pos,
        "non_members": n_neg,
        "confidence": confidence,
        "delta": delta,
        "method": "clopper-pearson, threshold chosen on a held-out half (Jagielski et al. 2020)",
    }


def one_run_pvalue(r: int, v: int, m: int, eps: float, delta: float) -> float:
    """Probability that an (eps, delta)-DP training lets r guesses over m canaries be right v times or more
    (Steinke, Nasr, Jagielski 2023): P[Bin(r, p) >= v] + 2 m delta max_i P[v - i <= Bin(r, p) < v] / i,
    with p = e^eps / (1 + e^eps)."""
    from scipy.stats import binom

    p = 1.0 / (1.0 + math.exp(-eps))
    tail = float(binom.sf(v - 1, r, p))
    if delta <= 0 or v <= 0:
        return min(1.0, tail)
    i = np.arange(1, v + 1)
    mass = np.cumsum(binom.pmf(v - i, r, p))
    return min(1.0, tail + 2 * m * delta * float(np.max(mass / i)))


def _one_run_epsilon(r: int, v: int, m: int, delta: float, alpha: float) -> float:
    """The largest eps rejected at level alpha (p-value below alpha), by bisection; 0 if none."""
    if r == 0 or one_run_pvalue(r, v, m, 0.0, delta) >= alpha:
        return 0.0
    lo, hi = 0.0, 1.0
    while one_run_pvalue(r, v, m, hi, delta) < alpha and hi < 64:
        lo, hi = hi, 2 * hi
    for _ in range(50):
        mid = (lo + hi) / 2
        if one_run_pvalue(r, v, m, mid, delta) < alpha:
            lo = mid
        else:
            hi = mid
    return lo


def one_run_lower_bound(
    scores: np.ndarray | list[float],
    included: np.ndarray | list[bool],
    delta: float = 0.0,
    confidence: float = 0.95,
    guesses: list[int] | None = None,
) -> dict[str, Any]:
    """One-run audit (Steinke, Nasr, Jagielski 2023) of m canaries, each included with probability 1/2.

    For each number of guesses r in ``guesses`` (default: 10%, 20%, 50% and 100% of m), the top r/2 scores are
    guessed in and the bottom r/2 out; v correct guesses reject every eps whose :func:`one_run_pvalue` is
    below beta; beta = 1 - confidence is split evenly over the values of r tried (Bonferroni).
    """
    s = np.asarray(scores, dtype=float)
    inc = np.asarray(included, dtype=bool)
    m = len(s)
    order = np.argsort(-s, kind="stable")
    guesses = guesses or sorted({max(2, int(m * f)) // 2 * 2 for f in (0.1, 0.2, 0.5, 1.0)})
    beta = (1 - confidence) / len(guesses)
    best: dict[str, Any] = {"epsilon_lower_bound": 0.0, "guesses": 0, "correct": 0}
    for r in guesses:
        k = min(r // 2, m // 2)
        top, bottom = order[:k], order[m - k :]
        v = int(inc[top].sum() + (~inc[bottom]).sum())
        e = _one_run_epsilon(2 * k, v, m, delta, beta)
        if e >= best["epsilon_lower_bound"]:
            best = {"epsilon_lower_bound": e, "guesses": 2 * k, "correct": v}
    return {
        **best,
        "canaries": m,
        "confidence": confidence,
        "delta": delta,
        "method": "one-run audit (Steinke, Nasr, Jagielski 2023)",
    }


def audit_privacy(
    scores: np.ndarray | list[float],
    is_member: np.ndarray | list[bool],
    epsilon: float | None,
    delta: float | None,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """The empirical side of a ``privacy`` block: both lower bounds beside the accountant's epsilon.

    ``epsilon_lower_bound`` is the Clopper-Pearson bound (each bound holds at ``confidence`` on its own; the
    one-run bound is reported beside it, not maxed in, so that the stated confidence stays true).
    A lower bound above the accountant's epsilon means a bug (in the accounting, the training or the attack):
    it is flagged with ``bound_exceeds_epsilon`` and a warning.
    """
    d = float(delta or 0.0)
    cp = scores_lower_bound(scores, is_member, d, confidence, seed)
    one = one_run_lower_bound(scores, is_member, d, confidence)
    lb = cp["epsilon_lower_bound"]
    worst = max(lb, one["epsilon_lower_bound"])
    out: dict[str, Any] = {
        "epsilon_lower_bound": lb,
        "epsilon_lower_bound_cp": cp,
        "epsilon_lower_bound_one_run": one,
        "bound_exceeds_epsilon": bool(epsilon is not None and worst > epsilon),
    }
    if out["bound_exceeds_epsilon"]:
        warnings.warn(
            f"empirical epsilon lower bound {worst:.3f} exceeds the accountant's epsilon {epsilon:.3f}: "
            "the DP guarantee is broken (accounting, training or attack bug)",
            RuntimeWarning,
            stacklevel=2,
        )
    return out
