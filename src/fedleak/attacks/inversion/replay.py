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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.modules.batchnorm import _BatchNorm

Forward = Callable[[dict[str, Tensor], Tensor], Tensor]
LossFn = Callable[[Tensor, Tensor], Tensor]


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy; ``targets`` are class indices (int) or label logits (float, DLG's soft labels)."""
    if targets.is_floating_point():
        return torch.sum(-F.softmax(targets, -1) * F.log_softmax(logits, -1), -1).mean()
    return F.cross_entropy(logits, targets)


class ReplayBatchNorm(_BatchNorm):
    """Train-mode BatchNorm written out in plain tensor operations (batch statistics, no running buffers).

    PyTorch's fused batch norm has a wrong batching rule for its backward under ``vmap`` (pytorch/functorch
    #534): the attack's objective, a vmapped double backward, then gets a gradient off by 0.05-7% relative in
    float64 (a BatchNorm1d MLP: 2-7%; a conv + BatchNorm2d net: 0.05-0.1%) while its value is right. Written
    out, the same forward's gradients equal plain autograd's to 1e-16."""

    def forward(self, x: Tensor) -> Tensor:
        dims = [0, *range(2, x.dim())]
        mean = x.mean(dims, keepdim=True)
        var = x.var(dims, correction=0, keepdim=True)
        out = (x - mean) * torch.rsqrt(var + self.eps)
        if self.weight is not None:
            shape = [1, -1] + [1] * (x.dim() - 2)
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def attack_module(model: nn.Module, train_mode: bool) -> nn.Module:
    """A copy of ``model`` ready for functional replay: in the client's mode, with BatchNorm using batch
    statistics without touching running buffers in train mode (so it runs under ``vmap``; written out, as
    :class:`ReplayBatchNorm`, so that its double backward is right under ``vmap``)."""
    m = copy.deepcopy(model)
    m.train(train_mode)
    if train_mode:
        torch.func.replace_all_batch_norm_modules_(m)
        for mod in m.modules():
            if isinstance(mod, _BatchNorm):
                mod.__class__ = ReplayBatchNorm
    for p in m.parameters():
        p.requires_grad_(False)
    return m


BNStats = list[tuple[int, str, Tensor, Tensor]]  # (local step, BatchNorm layer, batch mean, unbiased batch var)


@contextmanager
def recording_batchnorm(model: nn.Module, step: int = 0) -> Iterator[BNStats]:
    """While open, each call of a BatchNorm layer of ``model`` appends the per-channel statistics of its input
    (mean and the unbiased variance, which PyTorch's running buffers average) to the yielded list, in call
    order. Pure tensor functions of the input: they compose with ``vmap`` and ``torch.func.grad``."""
    events: BNStats = []

    def hook(name: str):  # noqa: ANN202
        def record(_mod: nn.Module, args: tuple) -> None:
            x = args[0]
            dims = [0, *range(2, x.dim())]
            events.append((step, name, x.mean(dims), x.var(dims, correction=1)))

        return record

    handles = [
        mod.register_forward_pre_hook(hook(name)) for name, mod in model.named_modules() if isinstance(mod, _BatchNorm)
    ]
    try:
        yield events
    finally:
        for h in handles:
            h.remove()


def _grad_and_stats(
    model: nn.Module,
    loss: Callable[[dict[str, Tensor]], Tensor],
    p: dict[str, Tensor],
    step: int,
    bn_stats: BNStats | None,
    graph: bool = True,
) -> dict[str, Tensor]:
    """``torch.func.grad(loss)(p)``; with ``bn_stats`` (a list) the BatchNorm input statistics of that forward
    are appended to it (they leave the transform as its auxiliary output, still differentiable in the inputs)."""
    if bn_stats is None:
        if torch._C._functorch.maybe_current_level() is None:
            return _autograd_grad(loss, p, graph)
        return torch.func.grad(loss)(p)

    names: list[tuple[int, str]] = []

    def with_stats(q: dict[str, Tensor]) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        with recording_batchnorm(model, step) as events:
            value = loss(q)
        names.extend((s, name) for s, name, _, _ in events)
        return value, [(m, v) for _, _, m, v in events]  # an auxiliary output holds tensors only

    g, stats = torch.func.grad(with_stats, has_aux=True)(p)
    bn_stats.extend((s, name, m, v) for (s, name), (m, v) in zip(names, stats, strict=True))
    return g


def _autograd_grad(loss: Callable[[dict[str, Tensor]], Tensor], p: dict[str, Tensor], graph: bool) -> dict[str, Tensor]:
    """``torch.func.grad(loss)(p)`` outside any torch.func transform, by plain autograd (``graph``: keep the
    gradient differentiable, as where the inputs require grad): the same values; for one problem, as an
    attack's target alone, 1.6x faster than the transform under vmap on DLG's LeNet (10.8 against 17.1 ms)."""
    q = {k: v if v.requires_grad else v.detach().requires_grad_(True) for k, v in p.items()}
    with torch.enable_grad():
        grads = torch.autograd.grad(loss(q), list(q.values()), create_graph=graph, allow_unused=True)
    return {k: torch.zeros_like(v) if g is None else g for (k, v), g in zip(q.items(), grads, strict=True)}


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
    bn_stats: BNStats | None = None,
) -> dict[str, Tensor]:
    """The gradient of ``loss_fn`` over the batch with respect to ``params`` (differentiable in ``inputs``).

    ``consts`` are the other parameters and buffers; ``forward(params, inputs) -> logits`` overrides the
    default ``functional_call(model, (params, consts), (inputs,))`` (e.g. for a model fed embeddings).
    ``bn_stats``: a list to which each BatchNorm call's input statistics are appended (step 0).
    """
    fwd = _forward(model, consts, forward)
    graph = inputs.requires_grad or targets.requires_grad or any(v.requires_grad for v in params.values())
    return _grad_and_stats(model, lambda p: loss_fn(fwd(p, inputs), targets), params, 0, bn_stats, graph)


def local_batches(n: int, batch_size: int, local_steps: int) -> list[slice]:
    """The attacker's assumed minibatch order: consecutive slices of the dummy batch, cycling by epoch (the
    client's shuffle is unknown, and the dummy records are free to take any order).

        >>> local_batches(5, 2, 4)
        [slice(0, 2, None), slice(2, 4, None), slice(4, 5, None), slice(0, 2, None)]
    """
    b = max(1, min(batch_size, n))
    epoch = [slice(i, min(i + b, n)) for i in range(0, n, b)]
    return [epoch[s % len(epoch)] for s in range(local_steps)]


def first_epoch(n: int, batch_size: int, local_steps: int) -> list[slice]:
    """The batches of the replay's first epoch (:func:`local_batches`; later epochs repeat them), or fewer when
    the client stopped within it.

        >>> first_epoch(5, 2, 6)
        [slice(0, 2, None), slice(2, 4, None), slice(4, 5, None)]
    """
    return local_batches(n, batch_size, min(local_steps, -(-n // max(1, min(batch_size, n)))))


def step_key(row: Sequence[int], epoch: Sequence[slice]) -> tuple:
    """What a replay can tell apart of a label row: the multiset of labels each step's batch holds, in order."""
    return tuple(tuple(sorted(row[sl])) for sl in epoch)


def label_arrangements(labels: Tensor, batch_size: int, local_steps: int, count: int, seed: int = 0) -> Tensor:
    """Up to ``count`` orderings (A, n) of a FedAvg client's ``labels`` (n,) that differ in what the replay
    can tell apart: the sequence of label multisets its batches hold (:func:`local_batches`, one epoch; the
    later epochs repeat the first's slices). The client's shuffle is unknown and, at a learning rate where
    its steps move the model, which records shared a step changes the update: on DLG's LeNet (CIFAR-10, 4
    records in 2 steps of 2 at lr 0.01) the true images replayed under a wrong pairing miss the update by
    6-20% of its squared norm, the right one by 1e-11. Record i of an ordering carries label ``row[i]``; the
    first ordering is ``labels`` itself. Every distinct arrangement when there are at most ``count`` (enumerated
    batch by batch), else ``count`` of them (the first orderings up to n = 8, beyond that seeded random ones).

        >>> label_arrangements(torch.tensor([0, 1, 2, 3]), 2, 2, 10).shape[0]  # 4! / (2! 2!) step pairings
        6
        >>> label_arrangements(torch.tensor([5, 5, 7, 7]), 2, 2, 10).tolist()  # {5,5}{7,7}, {5,7}{5,7}, {7,7}{5,5}
        [[5, 5, 7, 7], [5, 7, 5, 7], [7, 7, 5, 5]]
    """
    import itertools

    n = int(labels.numel())
    epoch = first_epoch(n, batch_size, local_steps)
    base = labels.tolist()
    few = _distinct_arrangements(base, epoch, count + 1)
    if len(few) <= count:  # all of them (sampling would look long for the rare ones: 16 equal labels have 1)
        own = step_key(base, epoch)
        rows = [base] + [r for r in few if step_key(r, epoch) != own]
        return torch.tensor(rows, dtype=labels.dtype, device=labels.device)
    if n <= 8:
        orders: Iterator[Sequence[int]] = itertools.permutations(range(n))
    else:
        gen = torch.Generator().manual_seed(seed)
        first = [tuple(range(n))]
        orders = itertools.chain(first, (torch.randperm(n, generator=gen).tolist() for _ in range(50 * count)))
    seen: dict[tuple, list[int]] = {}
    for order in orders:
        row = [base[i] for i in order]
        seen.setdefault(step_key(row, epoch), row)
        if len(seen) == count:
            break
    for row in few:  # random orders can miss rare arrangements: the enumerated ones make up the count
        if len(seen) == count:
            break
        seen.setdefault(step_key(row, epoch), row)
    return torch.tensor(list(seen.values()), dtype=labels.dtype, device=labels.device)


def _distinct_arrangements(row: list[int], epoch: list[slice], limit: int) -> list[list[int]]:
    """Up to ``limit`` label rows, one for each distinct sequence of the batches' label multisets (each batch's
    labels sorted; records beyond the last batch at the end), built batch by batch from what the earlier batches
    left.

        >>> _distinct_arrangements([0, 0, 1, 1], first_epoch(4, 2, 2), 10)
        [[0, 0, 1, 1], [0, 1, 0, 1], [1, 1, 0, 0]]
    """
    classes = sorted(set(row))
    left = [row.count(c) for c in classes]
    out: list[list[int]] = []

    def picks(size: int, k: int) -> Iterator[list[int]]:  # how many of each class k.. one batch takes
        if k == len(classes) - 1:
            if size <= left[k]:
                yield [size]
            return
        for take in range(min(size, left[k]), -1, -1):
            for rest in picks(size - take, k + 1):
                yield [take, *rest]

    def fill(step: int, prefix: list[int]) -> None:
        if len(out) >= limit:
            return
        if step == len(epoch):  # records no step reached (a client stopped within its epoch) at the end
            out.append(prefix + [c for c, t in zip(classes, left, strict=True) for _ in range(t)])
            return
        sl = epoch[step]
        for take in picks(sl.stop - sl.start, 0):
            for k, t in enumerate(take):
                left[k] -= t
            fill(step + 1, prefix + [c for c, t in zip(classes, take, strict=True) for _ in range(t)])
            for k, t in enumerate(take):
                left[k] += t
            if len(out) >= limit:
                return

    fill(0, [])
    return out


def epoch_count(n: int, batch_size: int, local_steps: int) -> int:
    """How many epochs ``local_steps`` steps over ``n`` records in batches of ``batch_size`` touch.

    >>> epoch_count(4, 2, 6), epoch_count(5, 2, 4), epoch_count(4, 4, 1)
    (3, 2, 1)
    """
    return -(-local_steps // len(first_epoch(n, batch_size, n)))


def epoch_groupings(n: int, batch_size: int, limit: int) -> Tensor | None:
    """Every way one epoch can group ``n`` records into its batches of ``batch_size``, as record orders (G, n)
    (the batches are consecutive slices of an order, each slice sorted: an order within a batch changes nothing),
    the identity first; None when there are more than ``limit``.

        >>> epoch_groupings(4, 2, 10).tolist()
        [[0, 1, 2, 3], [0, 2, 1, 3], [0, 3, 1, 2], [1, 2, 0, 3], [1, 3, 0, 2], [2, 3, 0, 1]]
        >>> epoch_groupings(4, 4, 10).tolist(), epoch_groupings(16, 2, 1000)
        ([[0, 1, 2, 3]], None)
    """
    orders = _distinct_arrangements(list(range(n)), first_epoch(n, batch_size, n), limit + 1)  # n distinct labels
    return None if len(orders) > limit else torch.tensor(orders, dtype=torch.long)


def schedule_batches(schedule: Tensor, n: int, batch_size: int, local_steps: int) -> list[Tensor]:
    """The index batches of a client's local steps when epoch e takes the records in the order ``schedule[e]``
    (``schedule``: (E, n), E = :func:`epoch_count`; record i is dummy i, so epoch 0's order is free and is the
    identity by convention). Composes with ``vmap`` over schedules (the batches are then batched indices).

        >>> s = torch.tensor([[0, 1, 2, 3], [0, 2, 1, 3]])
        >>> [b.tolist() for b in schedule_batches(s, 4, 2, 4)]
        [[0, 1], [2, 3], [0, 2], [1, 3]]
    """
    epoch = first_epoch(n, batch_size, n)
    return [schedule[s // len(epoch)][epoch[s % len(epoch)]] for s in range(local_steps)]


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
    bn_stats: BNStats | None = None,
) -> dict[str, Tensor]:
    """w1 - w0 after ``local_steps`` SGD steps at ``local_lr`` on minibatches of ``batch_size``
    (differentiable in ``inputs``), as Geiping et al. replay a FedAvg client.

    E local epochs of n records in batches of b are ``local_steps = E * ceil(n / b)`` steps; each record has one
    dummy, shared by every epoch it appears in. ``order`` (one index batch per step) is the client's batch order
    when the server knows it (``fedleak.fl.local.minibatches`` with the client's generator gives exactly the
    client's), else consecutive slices per epoch (:func:`local_batches`). ``bn_stats``: a list to which each
    step's BatchNorm input statistics are appended (what the client's running buffers average)."""
    fwd = _forward(model, consts, forward)
    p = dict(params)
    batches = list(order) if order is not None else local_batches(inputs.shape[0], batch_size, local_steps)
    graph = inputs.requires_grad or targets.requires_grad or any(v.requires_grad for v in params.values())
    for step, sl in enumerate(batches):
        xb, yb = inputs[sl], targets[sl]
        g = _grad_and_stats(model, lambda q, xb=xb, yb=yb: loss_fn(fwd(q, xb), yb), p, step, bn_stats, graph)
        p = {k: p[k] - local_lr * g[k] for k in p}
    return {k: p[k] - params[k] for k in params}


__all__ = [
    "BNStats",
    "ReplayBatchNorm",
    "epoch_count",
    "epoch_groupings",
    "attack_module",
    "fedavg_delta",
    "fedsgd_gradient",
    "first_epoch",
    "label_arrangements",
    "local_batches",
    "recording_batchnorm",
    "schedule_batches",
    "soft_cross_entropy",
    "step_key",
]
