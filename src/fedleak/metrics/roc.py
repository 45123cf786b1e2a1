"""ROC analysis for membership inference: one score per record (higher = more likely a member) against the
truth. AUC, TPR at fixed low FPR (the figure that matters for privacy, Carlini et al. 2022),
balanced accuracy.

    >>> from fedleak.metrics import roc_report
    >>> r = roc_report([0.9, 0.8, 0.3, 0.1], [True, True, False, False])
    >>> r["auc"], r["tpr_at_fpr"]["0.01"], r["balanced_accuracy"]  # 2 non-members cannot resolve 1% FPR
    (1.0, None, 1.0)

Ties are handled exactly: records with equal scores move the curve diagonally, so a constant score has
AUC 0.5 and TPR 0 at every FPR below 1.

Honest statistics: a TPR at an FPR level below 1 / (number of non-members) is not resolvable (no threshold can
have that FPR except FPR 0) and is reported as ``None``; each resolvable TPR comes with a 95% Clopper-Pearson
interval over the members, the AUC with a 95% DeLong interval, and the member / non-member counts. Scores that
are NaN or infinite are an error (a diverged model or NaN inputs), never a ranking.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

FPR_LEVELS = (0.001, 0.01, 0.1)


def _arrays(scores: Any, is_member: Any) -> tuple[np.ndarray, np.ndarray]:
    def to_np(a: Any) -> np.ndarray:
        if hasattr(a, "detach"):
            a = a.detach().cpu().numpy()
        return np.asarray(a)

    s = to_np(scores).astype(np.float64).reshape(-1)
    m = to_np(is_member).astype(bool).reshape(-1)
    if len(s) != len(m):
        raise ValueError(f"{len(s)} scores but {len(m)} membership labels")
    if m.all() or not m.any():
        raise ValueError("roc needs both members and non-members")
    bad = ~np.isfinite(s)
    if bad.any():
        from fedleak.errors import NonFiniteError

        raise NonFiniteError(
            f"{int(bad.sum())} of {len(s)} membership scores are NaN or infinite: the attacked model's outputs "
            "or the records' features are not finite (diverged training, NaN input); fix the model or data "
            "(a non-finite score is never scored as an attack)"
        )
    return s, m


def roc_curve(scores: Any, is_member: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds): one point per distinct score, from (0, 0) to (1, 1).

    A record is called a member when its score is >= the threshold.
    """
    s, m = _arrays(scores, is_member)
    order = np.argsort(-s, kind="stable")
    s, m = s[order], m[order]
    last_of_tie = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp = np.cumsum(m)[last_of_tie]
    fp = np.cumsum(~m)[last_of_tie]
    tpr = np.r_[0.0, tp / m.sum()]
    fpr = np.r_[0.0, fp / (~m).sum()]
    thresholds = np.r_[np.inf, s[last_of_tie]]
    return fpr, tpr, thresholds


def auc(scores: Any, is_member: Any) -> float:
    """Area under the ROC curve: the chance a random member outscores a random non-member (ties count 1/2)."""
    fpr, tpr, _ = roc_curve(scores, is_member)
    return float(np.trapezoid(tpr, fpr))


def tpr_at_fpr(scores: Any, is_member: Any, levels: Sequence[float] = FPR_LEVELS) -> dict[str, float | None]:
    """The highest TPR at a threshold whose FPR is at most each level, keyed by the level as written; ``None``
    where the level is below 1 / non-members (not resolvable)."""
    fpr, tpr, _ = roc_curve(scores, is_member)
    n_neg = int((~_arrays(scores, is_member)[1]).sum())
    return {_key(level): _tpr_at(fpr, tpr, level, n_neg) for level in levels}


def resolvable(level: float, non_members: int) -> bool:
    """Whether a TPR at FPR ``level`` can be measured with ``non_members`` non-members: at least one false
    positive must be allowed at that level (level * N >= 1)."""
    return level * non_members >= 1 - 1e-9


def _tpr_at(fpr: np.ndarray, tpr: np.ndarray, level: float, non_members: int) -> float | None:
    if not resolvable(level, non_members):
        return None
    return float(tpr[fpr <= level + 1e-12].max())


def delong_auc_ci(scores: Any, is_member: Any, confidence: float = 0.95) -> tuple[float, float]:
    """A ``confidence`` interval for the AUC by DeLong et al. (1988): the variance of the Mann-Whitney statistic
    from its structural components (midranks, so ties count 1/2), normal approximation, clipped to [0, 1]."""
    from scipy.stats import norm, rankdata

    s, m = _arrays(scores, is_member)
    pos, neg = s[m], s[~m]
    n1, n0 = len(pos), len(neg)
    r_all = rankdata(s)
    r_pos, r_neg = rankdata(pos), rankdata(neg)
    v10 = (r_all[m] - r_pos) / n0  # per member: share of non-members it outscores
    v01 = 1.0 - (r_all[~m] - r_neg) / n1  # per non-member: share of members that outscore it
    a = float(v10.mean())
    var = (v10.var(ddof=1) / n1 if n1 > 1 else 0.0) + (v01.var(ddof=1) / n0 if n0 > 1 else 0.0)
    half = float(norm.ppf(0.5 + confidence / 2)) * float(np.sqrt(max(var, 0.0)))
    return max(0.0, a - half), min(1.0, a + half)


def balanced_accuracy(scores: Any, is_member: Any) -> float:
    """The best (TPR + TNR) / 2 over all thresholds: the accuracy of the best threshold on a balanced set."""
    fpr, tpr, _ = roc_curve(scores, is_member)
    return float(((tpr + 1.0 - fpr) / 2.0).max())


def _key(level: float) -> str:
    return f"{level:g}"


def _thin(fpr: np.ndarray, tpr: np.ndarray, points: int) -> tuple[np.ndarray, np.ndarray]:
    """At most about ``points`` curve points, spaced on a log FPR grid (for log-log plots), plus the ends."""
    if len(fpr) <= points:
        return fpr, tpr
    grid = np.unique(np.r_[0.0, np.logspace(-5, 0, points - 1)])
    # for each grid FPR, the last curve point at or below it (the TPR achievable there)
    idx = np.searchsorted(fpr, grid, side="right") - 1
    idx = np.unique(np.r_[0, idx.clip(0), len(fpr) - 1])
    return fpr[idx], tpr[idx]


def roc_report(scores: Any, is_member: Any, levels: Sequence[float] = FPR_LEVELS, points: int = 200) -> dict:
    """Everything the membership results record: ``auc`` with ``auc_ci`` (95%, DeLong), ``tpr_at_fpr``
    {"0.001", "0.01", "0.1"} (``None`` where not resolvable) with ``tpr_at_fpr_ci`` (95% Clopper-Pearson over the
    members at the threshold read), ``counts`` {"members", "non_members"}, ``balanced_accuracy``, and the curve
    (``fpr``, ``tpr`` lists, thinned to about ``points`` for plotting). Non-finite scores raise
    :class:`~fedleak.errors.NonFiniteError`.

        >>> r = roc_report([3, 2, 1, 0], [1, 0, 1, 0])
        >>> r["auc"], r["tpr_at_fpr"]["0.1"], r["counts"]
        (0.75, None, {'members': 2, 'non_members': 2})
    """
    from fedleak.metrics.privacy import clopper_pearson

    s, m = _arrays(scores, is_member)
    fpr, tpr, _ = roc_curve(s, m)
    n_pos, n_neg = int(m.sum()), int((~m).sum())
    cf, ct = _thin(fpr, tpr, points)
    rates = {_key(level): _tpr_at(fpr, tpr, level, n_neg) for level in levels}
    cis = {
        k: (None if v is None else [float(b) for b in clopper_pearson(round(v * n_pos), n_pos)])
        for k, v in rates.items()
    }
    return {
        "auc": float(np.trapezoid(tpr, fpr)),
        "auc_ci": [float(b) for b in delong_auc_ci(s, m)],
        "tpr_at_fpr": rates,
        "tpr_at_fpr_ci": cis,
        "counts": {"members": n_pos, "non_members": n_neg},
        "balanced_accuracy": float(((tpr + 1.0 - fpr) / 2.0).max()),
        "curve": {"fpr": [float(v) for v in cf], "tpr": [float(v) for v in ct]},
    }
