"""Label recovery from the last layer's gradient, before any optimisation.

- One image (iDLG, Zhao et al. 2020): with softmax cross-entropy, dL/db_c = p_c - y_c is negative only at the
  true class; without a bias, the weight row of the true class is the one with a negative sum when the
  features feeding the layer are non-negative (sigmoid, ReLU).
- A batch of B: the bias gradient is g_c = mean_i p_ic - n_c / B, so with an estimate of the model's mean
  softmax output (the attacker runs the model it sent on inputs of its own) the counts n_c follow directly;
  without one, LLG's rule (Wainakh et al.): classes with a negative signal are present, the rest go one by
  one to the class whose signal is still the most negative.

A FedAvg update w1 - w0 is read as minus a (sum of) gradient(s), which keeps the signs right.

    >>> import torch
    >>> g = {"fc.weight": torch.zeros(3, 4), "fc.bias": torch.tensor([0.2, -0.5, 0.3])}
    >>> recover_labels(g, "fc.weight", "fc.bias", batch_size=1).tolist()
    [1]
"""

from __future__ import annotations

import torch
from torch import Tensor


def last_layer(payload: dict[str, Tensor], num_classes: int | None) -> tuple[str | None, str | None]:
    """(weight name, bias name or None) of the classification layer: the last 2-D weight with one row per
    class, in parameter order."""
    names = list(payload)
    for name in reversed(names):
        t = payload[name]
        if name.endswith("weight") and t.dim() == 2 and (num_classes is None or t.shape[0] == num_classes):
            bias = name[: -len("weight")] + "bias"
            return name, bias if bias in payload else None
    return None, None


def class_signal(payload: dict[str, Tensor], weight: str, bias: str | None, sign: float = 1.0) -> Tensor:
    """Per class: the bias gradient, or the weight-row sum when there is no bias."""
    g = payload[bias] if bias is not None else payload[weight].sum(1)
    return sign * g.detach().double()


def recover_labels(
    payload: dict[str, Tensor],
    weight: str,
    bias: str | None,
    batch_size: int,
    sign: float = 1.0,
    mean_probs: Tensor | None = None,
    clients: int = 1,
) -> Tensor:
    """The labels of a batch of ``batch_size`` records (over all ``clients`` of a secure sum) from the
    last-layer gradient; ``sign`` turns the payload into a (mean) gradient, e.g. -1 / (lr * steps) for a
    FedAvg delta.

    With ``mean_probs`` (the model's mean softmax output, which the attacker estimates by running the model
    it sent on inputs of its own), the bias gradient g_c = mean_i p_ic - n_c / B gives the counts
    n_c = B (K p_c - g_c) directly (rounded to sum to B, every class with g_c < 0 at least once); without
    it, LLG's rule (Wainakh et al.).
    """
    s = class_signal(payload, weight, bias, sign)
    if batch_size == 1:
        return s.argmin().view(1).cpu()
    if mean_probs is not None:
        per = batch_size / clients
        est = per * (clients * mean_probs.to(s) - s)
        cnt = est.clamp_min(0).floor()
        cnt[s < 0] = cnt[s < 0].clamp_min(1)
        while cnt.sum() < batch_size:
            cnt[(est - cnt).argmax()] += 1
        while cnt.sum() > batch_size:
            cnt[torch.where(cnt > 0, est - cnt, torch.full_like(est, float("inf"))).argmin()] -= 1
        return torch.repeat_interleave(torch.arange(len(cnt)), cnt.long().cpu())
    present = (s < 0).nonzero().flatten().tolist()
    labels = present[:batch_size]
    impact = s[s < 0].sum() / batch_size if present else s.min()
    s = s.clone()
    s[labels] -= impact
    while len(labels) < batch_size:
        c = int(s.argmin())
        labels.append(c)
        s[c] -= impact
    return torch.tensor(sorted(labels), dtype=torch.long)


__all__ = ["class_signal", "last_layer", "recover_labels"]
