"""Metrics: image quality (PSNR, SSIM, MSE, matching); more in submodules."""

from fedleak.metrics.image import image_scores, match, mse, psnr, ssim

__all__ = ["image_scores", "match", "mse", "psnr", "ssim"]
