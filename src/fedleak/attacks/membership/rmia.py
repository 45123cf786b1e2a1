"""RMIA, the robust membership inference attack (Zarifzadeh et al. 2024).

A record x is scored by how often its likelihood ratio against population records z exceeds gamma:
LR(x, z) = [p(x | target) / p(x)] / [p(z | target) / p(z)], where p(.) averages p(. | reference model) over
reference models and p(. | model) is the softmax probability of the true label. Online, p(x) averages IN and
OUT models; offline (OUT models only) it is approximated as ((1 + a) p_OUT(x) + (1 - a)) / 2.

    >>> import torch
    >>> scores = rmia_scores(torch.tensor([0.99, 0.5]), torch.tensor([[0.6, 0.5], [0.5, 0.5]]),
    ...                      torch.tensor([0.5, 0.4, 0.6]), torch.tensor([[0.5, 0.4, 0.6]] * 2))
    >>> scores.argmax().item()
    0

With one set of population records for all x the score is a monotone function of p(x | target) / p(x);
ties between records whose ratio beats every z are broken by that ratio (adds less than 1 / |z|).
"""

from __future__ import annotations

import torch
from torch import Tensor

from fedleak.attacks.membership.context import MembershipContext
from fedleak.attacks.membership.registry import attack
from fedleak.attacks.membership.signals import confidence


def _prior(p_ref: Tensor, ins: Tensor | None, online: bool, a: float) -> Tensor:
    """p(record) from the reference models' probabilities (K, n)."""
    if online or ins is None:
        return p_ref.mean(0)
    out = (~ins.to(p_ref.device)).to(p_ref.dtype)
    count = out.sum(0)
    p_out = torch.where(count > 0, (p_ref * out).sum(0) / count.clamp_min(1), p_ref.mean(0))
    return 0.5 * ((1 + a) * p_out + (1 - a))


def rmia_scores(
    p_target_x: Tensor,
    p_ref_x: Tensor,
    p_target_z: Tensor,
    p_ref_z: Tensor,
    *,
    in_x: Tensor | None = None,
    in_z: Tensor | None = None,
    online: bool = True,
    a: float = 0.3,
    gamma: float = 1.0,
    eps: float = 1e-12,
) -> Tensor:
    """RMIA scores: the fraction of z with LR(x, z) > gamma (plus a tie-break below 1 / |z|)."""
    ratio_x = p_target_x / _prior(p_ref_x, in_x, online, a).clamp_min(eps)
    ratio_z = p_target_z.to(ratio_x.device) / _prior(p_ref_z, in_z, online, a).clamp_min(eps)
    zs = ratio_z.sort().values
    frac = torch.searchsorted(zs, (ratio_x / gamma).contiguous(), right=False).to(ratio_x.dtype) / len(zs)
    rank = ratio_x.argsort().argsort().to(ratio_x.dtype) / max(1, len(ratio_x))
    return frac + rank / (len(zs) + 1)


def _rmia(online: bool):  # noqa: ANN202
    def run(
        ctx: MembershipContext, a: float = 0.3, gamma: float = 1.0, temperature: float = 1.0, **_: object
    ) -> Tensor:
        ctx.reference_count("RMIA", least=2 if online else 1)
        pop = ctx.need_population("RMIA (population records z)")
        _, in_x, in_z = ctx.reference_set(online=True)
        t = temperature
        px = confidence(ctx.target_logits() / t, ctx.records.y)
        pz = confidence(ctx.target_population_logits() / t, pop.y)
        rx = confidence(ctx.reference_logits(True) / t, ctx.records.y)
        rz = confidence(ctx.reference_logits(True, "population") / t, pop.y)
        return rmia_scores(px, rx, pz, rz, in_x=in_x, in_z=in_z, online=online, a=a, gamma=gamma)

    return run


attack("rmia", "RMIA online: likelihood ratio against population records (Zarifzadeh et al. 2024)", "online")(
    _rmia(True)
)
attack("rmia-offline", "RMIA offline: OUT reference models only, with the `a` approximation", "online")(_rmia(False))
