"""Image reconstruction quality in [0, 1] pixel space: MSE, PSNR, SSIM, and Hungarian matching of a batch of
reconstructions to its originals.

    >>> import torch
    >>> x = torch.rand(2, 3, 16, 16)
    >>> float(psnr(x, x)) > 100, round(float(ssim(x, x).mean()), 4)
    (True, 1.0)
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

PSNR_CAP = 200.0  # the PSNR reported for an exact copy (float precision), instead of infinity


def mse(a: Tensor, b: Tensor) -> Tensor:
    """Per-image mean squared error over (C, H, W)."""
    return (a.double() - b.double()).pow(2).flatten(1).mean(1)


def psnr(a: Tensor, b: Tensor, data_range: float = 1.0) -> Tensor:
    """Per-image PSNR in dB (capped at PSNR_CAP for identical images)."""
    err = mse(a, b)
    out = 10 * torch.log10(data_range**2 / err.clamp_min(1e-30))
    return out.clamp(max=PSNR_CAP).float()


def _gaussian_window(size: int, sigma: float, channels: int, dtype: torch.dtype) -> Tensor:
    r = torch.arange(size, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(a: Tensor, b: Tensor, data_range: float = 1.0) -> Tensor:
    """Per-image SSIM (Wang et al. 2004): 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03, averaged over
    channels; the window shrinks (odd, at least 3) for images smaller than 11 px, as scikit-image's does."""
    a, b = a.double(), b.double()
    c = a.shape[1]
    size = min(11, min(a.shape[-2:]) - (1 - min(a.shape[-2:]) % 2))
    size = max(size, 3)
    use_gauss = size == 11
    if use_gauss:
        w = _gaussian_window(size, 1.5, c, a.dtype).to(a.device)
    else:
        w = torch.full((c, 1, size, size), 1.0 / size**2, dtype=a.dtype, device=a.device)

    def filt(x: Tensor) -> Tensor:
        return F.conv2d(x, w, groups=c)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = filt(a), filt(b)
    n = size * size
    cov_norm = 1.0 if use_gauss else n / (n - 1)  # as scikit-image: Wang's Gaussian form, else sample cov
    va = cov_norm * (filt(a * a) - mu_a**2)
    vb = cov_norm * (filt(b * b) - mu_b**2)
    cab = cov_norm * (filt(a * b) - mu_a * mu_b)
    s = ((2 * mu_a * mu_b + c1) * (2 * cab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (va + vb + c2))
    return s.flatten(1).mean(1).float()


def match(recon: Tensor, original: Tensor) -> Tensor:
    """Hungarian matching: ``perm`` such that ``recon[perm[i]]`` is paired with ``original[i]``, maximising
    the total PSNR (minimising total MSE). When an attack returns a different number of images than there are
    originals, each original is paired with its nearest reconstruction instead."""
    from scipy.optimize import linear_sum_assignment

    if len(recon) == 1:
        return torch.zeros(len(original), dtype=torch.long)
    cost = (original.double().flatten(1)[:, None, :] - recon.double().flatten(1)[None, :, :]).pow(2).mean(2)
    if len(recon) != len(original):
        return cost.argmin(1).cpu()
    rows, cols = linear_sum_assignment(np.log(cost.cpu().numpy() + 1e-30))
    perm = torch.empty(len(original), dtype=torch.long)
    perm[torch.as_tensor(rows)] = torch.as_tensor(cols)
    return perm


def image_scores(recon: Tensor, original: Tensor) -> dict[str, Tensor]:
    """Per-original MSE, PSNR and SSIM after matching; both in [0, 1] pixel space. ``perm`` is the matching."""
    perm = match(recon, original)
    r = recon[perm].to(original.device)
    return {
        "perm": perm,
        "mse": mse(r, original).float(),
        "psnr": psnr(r, original),
        "ssim": ssim(r, original),
    }


# ----------------------------------------------------------------- what "rebuilt" means (the one rule)

REBUILT_MARGIN_DB = 10.0  # a reconstruction must beat the better trivial image by this much ...
REBUILT_MIN_SSIM = 0.5  # ... and share the original's structure (a flat image scores SSIM near 0 on texture)


def trivial_baselines(original: Tensor, dataset_mean: Tensor | None = None) -> Tensor:
    """Per original, the PSNR that a picture carrying no information about it would already score: the better of
    the best flat image (each channel at the original's own mean colour, the constant image of least error) and,
    when given, the dataset's mean image. A reconstruction is only evidence of leakage well above this.

        >>> import torch
        >>> flat = torch.full((1, 1, 8, 8), 0.5)
        >>> float(trivial_baselines(flat)[0]) == PSNR_CAP  # a flat original is matched exactly by a flat image
        True
    """
    flat = original.double().mean(dim=(-2, -1), keepdim=True).expand_as(original)
    best = psnr(flat, original)
    if dataset_mean is not None:
        mean_img = dataset_mean.to(original.device).double().expand_as(original)
        best = torch.maximum(best, psnr(mean_img, original))
    return best


def is_rebuilt(psnr_db: float, ssim_value: float, baseline_psnr: float) -> bool:
    """The one meaning of "rebuilt", shared by ``invert``, the audit, the sweep and the report: PSNR at least
    ``REBUILT_MARGIN_DB`` (10 dB, a tenth of the baseline's squared error) above the better trivial baseline of
    :func:`trivial_baselines`, and SSIM at least ``REBUILT_MIN_SSIM`` (0.5). A blank or mean image can never meet
    it, since it scores the baseline itself.

        >>> is_rebuilt(40.0, 0.9, 25.0), is_rebuilt(30.0, 0.9, 25.0), is_rebuilt(40.0, 0.3, 25.0)
        (True, False, False)
    """
    return bool(psnr_db >= baseline_psnr + REBUILT_MARGIN_DB and ssim_value >= REBUILT_MIN_SSIM)
