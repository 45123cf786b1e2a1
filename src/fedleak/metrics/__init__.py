"""Metrics: image quality (PSNR, SSIM, MSE, matching); more in submodules."""

from fedleak.metrics.image import image_scores, match, mse, psnr, ssim
from fedleak.metrics.roc import auc, balanced_accuracy, roc_curve, roc_report, tpr_at_fpr

__all__ = ["image_scores", "match", "mse", "psnr", "ssim",
           "auc", "balanced_accuracy", "roc_curve", "roc_report", "tpr_at_fpr"]
