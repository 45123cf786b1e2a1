"""Metrics: image quality (PSNR, SSIM, MSE, matching); more in submodules."""

from fedleak.metrics.image import image_scores, is_rebuilt, match, mse, psnr, ssim, trivial_baselines
from fedleak.metrics.privacy import (
    audit_privacy,
    clopper_pearson,
    epsilon_lower_bound,
    one_run_lower_bound,
    scores_lower_bound,
)
from fedleak.metrics.roc import auc, balanced_accuracy, roc_curve, roc_report, tpr_at_fpr
from fedleak.metrics.text import exact_match, match_sequences, rouge_l, rouge_n, text_scores, token_accuracy

__all__ = [
    "image_scores",
    "is_rebuilt",
    "trivial_baselines",
    "match",
    "mse",
    "psnr",
    "ssim",
    "auc",
    "balanced_accuracy",
    "roc_curve",
    "roc_report",
    "tpr_at_fpr",
    "audit_privacy",
    "clopper_pearson",
    "epsilon_lower_bound",
    "one_run_lower_bound",
    "scores_lower_bound",
    "exact_match",
    "match_sequences",
    "rouge_l",
    "rouge_n",
    "text_scores",
    "token_accuracy",
]
