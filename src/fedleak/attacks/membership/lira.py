"""LiRA, the likelihood-ratio attack (Carlini et al. 2022).

Each record's logit-scaled confidence phi = log(p_y / (1 - p_y)) is close to Gaussian over models trained
with (IN) or without (OUT) it. Online: fit both Gaussians from reference models and score the target's phi by
the log likelihood ratio. Offline: OUT models only, score = log P[phi_OUT <= phi_target] (one-sided test).
With few reference models a variance shared by all records ("global") is more stable than per-record ones.

    >>> import torch
    >>> phi_t = torch.tensor([5.0, 0.0])
    >>> ref = torch.tensor([[5.0, 0.0], [0.0, 0.0], [5.2, 0.1], [0.2, -0.1]])   # (K, n)
    >>> ins = torch.tensor([[1, 1], [0, 0], [1, 1], [0, 0]]).bool()
    >>> lira_scores(phi_t, ref, ins).argmax().item()      # record 0 moves when it is IN: it is a member
    0
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from fedleak.attacks.membership.context import MembershipContext
from fedleak.attacks.membership.registry import attack
from fedleak.attacks.membership.signals import scaled_logit

VARIANCES = ("auto", "global", "per-record")


def _stats(ref: Tensor, mask: Tensor, per_record: bool, floor: float = 1e-3) -> tuple[Tensor, Tensor, Tensor]:
    """Masked mean and std over the models axis (K, n); records with no models get NaN means."""
    w = mask.to(ref.dtype)
    count = w.sum(0)
    mean = (ref * w).sum(0) / count.clamp_min(1)
    mean = torch.where(count > 0, mean, torch.full_like(mean, float("nan")))
    dev2 = ((ref - mean.nan_to_num()) ** 2) * w
    if per_record:
        var = dev2.sum(0) / (count - 1).clamp_min(1)
        pooled = dev2.sum() / (count - 1).clamp_min(0).sum().clamp_min(1)
        var = torch.where(count > 1, var, pooled.expand_as(var))
    else:
        var = (dev2.sum() / (count - 1).clamp_min(0).sum().clamp_min(1)).expand_as(mean)
    return mean, var.clamp_min(floor**2).sqrt(), count


def _normal_logpdf(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    return -0.5 * ((x - mean) / std) ** 2 - std.log() - 0.5 * math.log(2 * math.pi)


def lira_scores(
    target_phi: Tensor,
    reference_phi: Tensor,
    reference_in: Tensor,
    *,
    online: bool = True,
    variance: str = "auto",
) -> Tensor:
    """LiRA scores from the target's phi (n,), the reference models' phi (K, n) and which of them trained on
    each record (K, n). ``variance``: "global", "per-record" or "auto" (per-record from 64 models on)."""
    if variance not in VARIANCES:
        from fedleak.errors import FedleakInputError

        raise FedleakInputError(f"LiRA variance={variance!r}: choose one of {', '.join(VARIANCES)}")
    k = reference_phi.shape[0]
    per_record = variance == "per-record" or (variance == "auto" and k >= 64)
    ins = reference_in.to(reference_phi.device)
    mu_out, sd_out, n_out = _stats(reference_phi, ~ins, per_record)
    # a record no OUT model covers (rare): compare it with every model
    all_mu, all_sd, _ = _stats(reference_phi, torch.ones_like(ins), per_record)
    mu_out = torch.where(n_out > 0, mu_out, all_mu)
    sd_out = torch.where(n_out > 0, sd_out, all_sd)
    t = target_phi.to(reference_phi.device)
    if not online:
        return torch.special.log_ndtr((t - mu_out) / sd_out)
    mu_in, sd_in, n_in = _stats(reference_phi, ins, per_record)
    score = _normal_logpdf(t, mu_in.nan_to_num(), sd_in) - _normal_logpdf(t, mu_out, sd_out)
    offline = torch.special.log_ndtr((t - mu_out) / sd_out)
    return torch.where(n_in > 0, score, offline)  # no IN model for a record: fall back to the offline test


def _lira(online: bool):  # noqa: ANN202
    def run(ctx: MembershipContext, variance: str = "auto", **_: object) -> Tensor:
        # offline uses, for each record, only the reference models that never trained on it
        ctx.reference_count("LiRA", least=2 if online else 1)
        _, ins, _ = ctx.reference_set(online=True)
        ref_phi = scaled_logit(ctx.reference_logits(True), ctx.records.y)
        t_phi = scaled_logit(ctx.target_logits(), ctx.records.y)
        return lira_scores(t_phi, ref_phi, ins, online=online, variance=variance)

    return run


attack("lira", "LiRA online: per-record IN/OUT Gaussians of the scaled logit (Carlini et al. 2022)", "online")(
    _lira(True)
)
attack("lira-offline", "LiRA offline: one-sided test against OUT reference models only", "online")(_lira(False))
