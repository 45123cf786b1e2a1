"""The honest-numbers layer: membership statistics with their resolution and intervals, non-finite scores
refused, and the one rule of "rebuilt" that no trivial picture can meet."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedleak.errors import FedleakInputError, NonFiniteError
from fedleak.metrics import roc_report
from fedleak.metrics.image import image_scores, is_rebuilt, psnr, trivial_baselines
from fedleak.metrics.roc import delong_auc_ci


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_scores_are_an_error_never_a_perfect_attack(bad):
    scores = [bad] * 10
    with pytest.raises(NonFiniteError, match="not finite|NaN or infinite"):
        roc_report(scores, [True] * 5 + [False] * 5)
    one_bad = [0.1, 0.2, bad, 0.4, 0.5, 0.6]  # a single non-finite score poisons the ranking as much
    with pytest.raises(FedleakInputError, match="1 of 6"):
        roc_report(one_bad, [True, False] * 3)


def test_tpr_below_one_over_non_members_is_not_resolvable():
    rng = np.random.default_rng(0)
    members, non = rng.normal(1, 1, 300), rng.normal(0, 1, 449)
    r = roc_report(np.r_[members, non], np.r_[np.ones(300, bool), np.zeros(449, bool)])
    assert r["counts"] == {"members": 300, "non_members": 449}
    # 449 non-members: the smallest non-zero FPR is 1/449 = 0.22%, so 0.1% cannot be read; 1% can (4 FPs)
    assert r["tpr_at_fpr"]["0.001"] is None and r["tpr_at_fpr_ci"]["0.001"] is None
    assert r["tpr_at_fpr"]["0.01"] is not None
    lo, hi = r["tpr_at_fpr_ci"]["0.01"]
    assert lo <= r["tpr_at_fpr"]["0.01"] <= hi
    # the interval is Clopper-Pearson over the 300 members at the threshold read
    from scipy.stats import binomtest

    k = round(r["tpr_at_fpr"]["0.01"] * 300)
    ci = binomtest(k, 300).proportion_ci(0.95, method="exact")
    assert (lo, hi) == pytest.approx((ci.low, ci.high))


def test_auc_interval_matches_delong_by_brute_force_and_covers_the_truth():
    rng = np.random.default_rng(1)
    pos, neg = rng.normal(0.8, 1, 80), rng.normal(0, 1, 120)
    # DeLong's structural components written out pairwise (O(n^2)), ties counting 1/2
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    auc = psi.mean()
    v10, v01 = psi.mean(1), psi.mean(0)
    se = math.sqrt(v10.var(ddof=1) / len(pos) + v01.var(ddof=1) / len(neg))
    lo, hi = delong_auc_ci(np.r_[pos, neg], np.r_[np.ones(80, bool), np.zeros(120, bool)])
    assert (lo, hi) == pytest.approx((auc - 1.959964 * se, auc + 1.959964 * se), abs=1e-6)
    # coverage: over 200 draws the 95% interval holds the true AUC (Phi(0.8 / sqrt 2) = 0.714) in 90-99%
    true_auc, hits = 0.7142, 0
    for seed in range(200):
        g = np.random.default_rng(100 + seed)
        s = np.r_[g.normal(0.8, 1, 80), g.normal(0, 1, 120)]
        a, b = delong_auc_ci(s, np.r_[np.ones(80, bool), np.zeros(120, bool)])
        hits += a <= true_auc <= b
    assert 0.90 <= hits / 200 <= 0.99


def test_a_blank_picture_is_never_rebuilt():
    """A flat face at its own mean grey can score above 30 dB; by the one rule it is never "rebuilt"."""
    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.avg_pool2d(torch.rand(6, 1, 40, 40, generator=g), 9, 1) * 0.2 + 0.4  # low contrast
    flat = smooth.mean(dim=(2, 3), keepdim=True).expand_as(smooth)
    black = torch.zeros_like(smooth)
    mean_img = smooth.mean(0, keepdim=True)
    base = trivial_baselines(smooth, mean_img)
    assert (base >= psnr(flat, smooth) - 1e-4).all()  # the baseline is at least the flat picture's score
    assert float(psnr(flat, smooth).max()) > 25  # where a fixed 25 dB rule would have called it rebuilt
    for blank in (flat, black, mean_img.expand_as(smooth)):
        sc = image_scores(blank, smooth)
        assert not any(
            is_rebuilt(float(p), float(s), float(b)) for p, s, b in zip(sc["psnr"], sc["ssim"], base, strict=True)
        )
    noisy = (smooth + 0.0005 * torch.randn(smooth.shape, generator=g)).clamp(0, 1)  # 10+ dB better than flat
    sc = image_scores(noisy, smooth)
    assert all(is_rebuilt(float(p), float(s), float(b)) for p, s, b in zip(sc["psnr"], sc["ssim"], base, strict=True))
