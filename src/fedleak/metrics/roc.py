"""ROC analysis for membership inference: one score per record (higher = more likely a member) against the
truth. AUC, TPR at fixed low FPR (the figure that matters for privacy, Carlini et al. 2022),
balanced accuracy.

    >>> from fedleak.metrics import roc_report
    >>> r = roc_report([0.9, 0.8, 0.3, 0.1], [True, True, False, False])
    >>> r["auc"], r["tpr_at_fpr"]["0.01"], r["balanced_accuracy"]
    (1.0, 1.0, 1.0)

Ties are handled exactly: records with equal scores move the curve diagonally, so a constant score has
AUC 0.5 and TPR 0 at every FPR below 1.
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
    s = np.nan_to_num(s, nan=-np.inf)
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


def tpr_at_fpr(scores: Any, is_member: Any, levels: Sequence[float] = FPR_LEVELS) -> dict[str, float]:
    """The highest TPR at a threshold whose FPR is at most each level, keyed by the level as written."""
    fpr, tpr, _ = roc_curve(scores, is_member)
    return {_key(level): float(tpr[fpr <= level + 1e-12].max()) for level in levels}


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
    """Everything the membership results record: auc, tpr_at_fpr {"0.001", "0.01", "0.1"},
    balanced_accuracy, and the curve (``fpr``, ``tpr`` lists, thinned to about ``points`` for plotting).

        >>> roc_report([3, 2, 1, 0], [1, 0, 1, 0])["auc"]
        0.75
    """
    fpr, tpr, _ = roc_curve(scores, is_member)
    cf, ct = _thin(fpr, tpr, points)
    return {
        "auc": float(np.trapezoid(tpr, fpr)),
        "tpr_at_fpr": {_key(level): float(tpr[fpr <= level + 1e-12].max()) for level in levels},
        "balanced_accuracy": float(((tpr + 1.0 - fpr) / 2.0).max()),
        "curve": {"fpr": [float(v) for v in cf], "tpr": [float(v) for v in ct]},
    }
