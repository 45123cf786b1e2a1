"""What the client computed, replayed differentiably by the attacker: the FedSGD gradient and the FedAvg
update (S local SGD steps from w0), as pure functions of (parameters, inputs, targets) built on
``torch.func.functional_call``. They work for any ``nn.Module`` and any input tensor (images, token
embeddings), and compose with ``torch.func.vmap`` to batch independent targets and restarts.

    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(4, 3))
    >>> params = {k: v.detach() for k, v in net.named_parameters()}
    >>> x, y = torch.randn(2, 4), torch.tensor([0, 2])
    >>> g = fedsgd_gradient(net, params, {}, x, y)
    >>> loss = nn.functional.cross_entropy(net(x), y)
    >>> torch.allclose(g["0.bias"], torch.autograd.grad(loss, net[0].bias)[0])
    True
    >>> d = fedavg_delta(net, params, {}, x, y, local_steps=1, local_lr=0.1, batch_size=2)
    >>> torch.allclose(d["0.bias"], -0.1 * g["0.bias"])
    True
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

Forward = Callable[[dict[str, Tensor], Tensor], Tensor]
LossFn = Callable[[Tensor, Tensor], Tensor]


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy; ``targets`` are class indices (int) or label logits (float, DLG's soft labels)."""
    if targets.is_floating_point():
        return torch.sum(-F.softmax(targets, -1) * F.log_softmax(logits, -1), -1).mean()
    return F.cross_entropy(logits, targets)


def attack_module(model: nn.Module, train_mode: bool) -> nn.Module:
    """A copy of ``model`` ready for functional replay: in the client's mode, with BatchNorm using batch
    statistics without touching running buffers in train mode (so it runs under ``vmap``)."""
    m = copy.deepcopy(model)
    m.train(train_mode)
    if train_mode:
        torch.func.replace_all_batch_norm_modules_(m)
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def _forward(model: nn.Module, consts: dict[str, Tensor], forward: Forward | None) -> Forward:
    if forward is not None:
        return forward
    return lambda p, x: functional_call(model, (p, consts), (x,))


def fedsgd_gradient(
    model: nn.Module,
    params: dict[str, Tensor],
    consts: dict[str, Tensor],
    inputs: Tensor,
    targets: Tensor,
    *,
    loss_fn: LossFn = soft_cross_entropy,
    forward: Forward | None = None,
) -> dict[str, Tensor]:
    """The gradient of ``loss_fn`` over the batch with respect to ``params`` (differentiable in ``inputs``).

    ``consts`` are the other parameters and buffers; ``forward(params, inputs) -> logits`` overrides the
    default ``functional_call(model, (params, consts), (inputs,))`` (e.g. for a model fed embeddings).
    """
    fwd = _forward(model, consts, forward)
    return torch.func.grad(lambda p: loss_fn(fwd(p, inputs), targets))(params)


def local_batches(n: int, batch_size: int, local_steps: int) -> list[slice]:
    """The attacker's assumed minibatch order: consecutive slices of the dummy batch, cycling by epoch (the
    client's shuffle is unknown, and the dummy records are free to take any order).

        >>> local_batches(5, 2, 4)
        [slice(0, 2, None), slice(2, 4, None), slice(4, 5, None), slice(0, 2, None)]
    """
    b = max(1, min(batch_size, n))
    epoch = [slice(i, min(i + b, n)) for i in range(0, n, b)]
    return [epoch[s % len(epoch)] for s in range(local_steps)]


def fedavg_delta(
    model: nn.Module,
    params: dict[str, Tensor],
    consts: dict[str, Tensor],
    inputs: Tensor,
    targets: Tensor,
    *,
    local_steps: int,
    local_lr: float,
    batch_size: int,
    loss_fn: LossFn = soft_cross_entropy,
    forward: Forward | None = None,
    order: Sequence[Tensor | slice] | None = None,
) -> dict[str, Tensor]:
    """w1 - w0 after ``local_steps`` SGD steps at ``local_lr`` on minibatches of ``batch_size``
    (differentiable in ``inputs``), as Geiping et al. replay a FedAvg client.

    E local epochs of n records in batches of b are ``local_steps = E * ceil(n / b)`` steps; each record has one
    dummy, shared by every epoch it appears in. ``order`` (one index batch per step) is the client's batch order
    when the server knows it (``fedleak.fl.local.minibatches`` with the client's generator gives exactly the
    client's), else consecutive slices per epoch (:func:`local_batches`)."""
    fwd = _forward(model, consts, forward)
    p = dict(params)
    batches = list(order) if order is not None else local_batches(inputs.shape[0], batch_size, local_steps)
    for sl in batches:
        xb, yb = inputs[sl], targets[sl]
        g = torch.func.grad(lambda q, xb=xb, yb=yb: loss_fn(fwd(q, xb), yb))(p)
        p = {k: p[k] - local_lr * g[k] for k in p}
    return {k: p[k] - params[k] for k in params}


__all__ = ["attack_module", "fedavg_delta", "fedsgd_gradient", "local_batches", "soft_cross_entropy"]
