"""Threshold attacks: one statistic of the target's output per record, no reference models.

Loss (Yeom et al. 2018), confidence, entropy and modified entropy (Song & Mittal 2021), each global or
class-conditional. Class-conditional scores compare a record with records of its own class that the target
never saw (the population): the score is standardised per class, so one threshold fits every class.

    >>> import torch
    >>> logits = torch.tensor([[5.0, 0.0], [1.0, 0.0], [0.0, 5.0]])
    >>> threshold_scores("loss", logits, torch.tensor([0, 0, 1])).argsort().tolist()  # lowest loss last
    [1, 0, 2]
"""

from __future__ import annotations

import torch
from torch import Tensor

from fedleak.attacks.membership.context import MembershipContext
from fedleak.attacks.membership.registry import attack
from fedleak.attacks.membership.signals import member_score


def threshold_scores(
    signal: str,
    logits: Tensor,
    y: Tensor,
    *,
    reference_logits: Tensor | None = None,
    reference_y: Tensor | None = None,
    conditional: bool = False,
) -> Tensor:
    """Scores (higher = member) from one signal; with ``conditional`` standardised per class on the reference
    (non-member) records when given, else on the records themselves."""
    s = member_score(signal, logits, y)
    if not conditional:
        return s
    if reference_logits is None:
        ref_s, ref_y = s, y
    else:
        ref_s, ref_y = member_score(signal, reference_logits, reference_y), reference_y
    ref_y, y = ref_y.to(s.device), y.to(s.device)
    out = torch.empty_like(s)
    global_mean = ref_s.mean()
    global_std = ref_s.std().clamp_min(1e-6) if len(ref_s) > 1 else torch.ones((), device=s.device)
    for c in torch.unique(y).tolist():
        here, ref = y == c, ref_s[ref_y == c]
        mean = ref.mean() if len(ref) else global_mean
        std = ref.std().clamp_min(1e-6) if len(ref) > 1 else global_std
        out[here] = (s[here] - mean) / std
    return out


def _make(signal: str, conditional: bool):  # noqa: ANN202
    def run(ctx: MembershipContext, **_: object) -> Tensor:
        ref_logits = ref_y = None
        if conditional and ctx.population is not None:
            ref_logits, ref_y = ctx.target_population_logits(), ctx.population.y
        return threshold_scores(
            signal,
            ctx.target_logits(),
            ctx.records.y,
            reference_logits=ref_logits,
            reference_y=ref_y,
            conditional=conditional,
        )

    return run


for _signal, _what in [
    ("loss", "cross-entropy loss (Yeom et al. 2018)"),
    ("confidence", "true-class probability"),
    ("entropy", "prediction entropy"),
    ("mentropy", "modified entropy (Song & Mittal 2021)"),
]:
    attack(_signal, f"threshold on the {_what}")(_make(_signal, False))
    attack(f"{_signal}-class", f"class-conditional threshold on the {_what}")(_make(_signal, True))
