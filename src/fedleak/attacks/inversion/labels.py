"""Label recovery from the last layer's gradient, before any optimisation.

- One image (iDLG, Zhao et al. 2020): with softmax cross-entropy, dL/db_c = p_c - y_c is negative only at the
  true class; without a bias, the weight row of the true class is the one with a negative sum when the
  features feeding the layer are non-negative (sigmoid, ReLU).
- A batch of B (after Wainakh et al.'s LLG): the classes with a negative last-layer signal are present; the
  remaining B - k labels go one by one to the class whose signal is still the most negative, each assignment
  raising that class's signal by the mean impact of one sample.

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
    payload: dict[str, Tensor], weight: str, bias: str | None, batch_size: int, sign: float = 1.0
) -> Tensor:
    """The B labels of a batch from its last-layer gradient (``sign=-1`` for a FedAvg delta)."""
    s = class_signal(payload, weight, bias, sign)
    if batch_size == 1:
        return s.argmin().view(1).cpu()
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
