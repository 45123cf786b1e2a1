"""What an attacker reads off a model's output for one labelled record: pure tensor functions of the logits.

>>> import torch
>>> logits, y = torch.tensor([[4.0, 0.0, 0.0]]), torch.tensor([0])
>>> round(float(scaled_logit(logits, y)), 3), round(float(loss(logits, y)), 4)
(3.307, 0.036)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from fedleak.registry import Registry


def _take(values: Tensor, y: Tensor) -> Tensor:
    """values[..., i, y_i]: the entry of each record's true class (works for (n, C) and (K, n, C))."""
    idx = y.to(values.device).view(*([1] * (values.dim() - 2)), -1, 1).expand(*values.shape[:-1], 1)
    return values.gather(-1, idx).squeeze(-1)


def loss(logits: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy of each record (Yeom et al. 2018): members have lower loss."""
    return -_take(F.log_softmax(logits.float(), -1), y)


def confidence(logits: Tensor, y: Tensor) -> Tensor:
    """Softmax probability of the true class."""
    return _take(F.softmax(logits.float(), -1), y)


def entropy(logits: Tensor, y: Tensor | None = None) -> Tensor:
    """Entropy of the prediction (label-free): members get sharper predictions."""
    logp = F.log_softmax(logits.float(), -1)
    return -(logp.exp() * logp).sum(-1)


def modified_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """Song & Mittal (2021): -(1 - p_y) log p_y - sum_{i != y} p_i log(1 - p_i); low for members."""
    logp = F.log_softmax(logits.float(), -1)
    p = logp.exp()
    log1mp = torch.log1p(-p.clamp(max=1 - 1e-7))
    terms = -p * log1mp  # i != y terms
    py, logpy = _take(p, y), _take(logp, y)
    return terms.sum(-1) - _take(terms, y) - (1 - py) * logpy


def scaled_logit(logits: Tensor, y: Tensor) -> Tensor:
    """LiRA's statistic log(p_y / (1 - p_y)), computed stably as z_y - logsumexp_{i != y} z_i."""
    z = logits.float()
    zy = _take(z, y)
    mask = F.one_hot(y.to(z.device), z.shape[-1]).bool().expand_as(z)
    others = torch.logsumexp(z.masked_fill(mask, float("-inf")), -1)
    return zy - others


SIGNALS: Registry = Registry("membership signal")
for _name, _fn, _sign in [
    ("loss", loss, -1.0),
    ("confidence", confidence, 1.0),
    ("entropy", entropy, -1.0),
    ("mentropy", modified_entropy, -1.0),
]:
    SIGNALS.register(_name, (_fn.__doc__ or "").split("\n")[0])((_fn, _sign))


def member_score(name: str, logits: Tensor, y: Tensor) -> Tensor:
    """The signal oriented so that higher = more likely a member."""
    fn, sign = SIGNALS.get(name)
    return sign * fn(logits, y)
