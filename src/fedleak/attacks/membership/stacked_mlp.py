"""K plain MLPs at once: forward and backward written out as batched matmuls on their stacked weights.

The reference models of LiRA, RMIA and Shokri's attack are most often the classic membership target, an MLP
(Flatten, then Linear layers with Tanh / ReLU / Sigmoid between them, no buffers). For K such models whose
weights are stacked along a leading axis, one training step is, per layer, one batched matmul forward and two
back (the weight gradient and the gradient sent to the layer below), which this module writes out directly:
no autograd graph per step, no ``vmap`` dispatch, and the gradients land in preallocated buffers (SGD's
momentum buffers themselves), one contiguous (K, ...) tensor per parameter. The arithmetic is that of
``F.cross_entropy(model(x), y)`` followed by ``loss.backward()``; only the rounding of the float sums differs
(tanh is computed as 2 sigmoid(2z) - 1, within 2e-7 of ``torch.tanh`` and about 1.6x faster on this CPU;
``tests/test_reference_speed.py`` checks the trained models against the sequential path).

What is left is the dense arithmetic: on the tabular protocol's 784-128 MLP the first layer's two batched
matmuls (forward, weight gradient) take 89% of the vectorised trainer's time (``bench/mia.py``). Measured and
not taken: one shared minibatch stream for all K models (each batch of 2b pool records multiplied once by all
K models' weights side by side, each model masked to its own members) runs the first layer as one GEMM at
26.5 GFLOP/s against the K small ones' 23.3, but does twice the arithmetic: 25.6 ms per step against 14.6
(K = 16, b = 64, 649 varying columns, one thread); sparse inputs (``F.embedding_bag`` over the 143 nonzero
pixels of a digit, of 649) make the forward 7.5 ms against 9.2 dense, but the per-step gather of the sparse
rows costs 3.7 ms and the weight gradient 87-131 ms against 10.1 dense.

    >>> import torch
    >>> from fedleak.models import build
    >>> from fedleak.data.dataset import DataSpec
    >>> spec = DataSpec("toy", "table", (6,), 3, ("a", "b", "c"), (0.0,) * 6, (1.0,) * 6)
    >>> net = build("mlp:5", spec, seed=0)
    >>> layers = plain_mlp(net)
    >>> [(la.weight, la.act) for la in layers]
    [('net.1.weight', 'tanh'), ('net.3.weight', None)]
    >>> p = {n: t.unsqueeze(0) for n, t in net.named_parameters()}  # K = 1
    >>> x = torch.randn(1, 4, 6)
    >>> torch.allclose(forward(layers, p, x)[0], net(x[0]), atol=1e-6)
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

ACTIVATION_NAMES: dict[type, str] = {nn.Tanh: "tanh", nn.ReLU: "relu", nn.Sigmoid: "sigmoid"}


@dataclass(frozen=True)
class Layer:
    """One Linear layer of a plain MLP: its parameter names and the activation that follows it (None: none)."""

    weight: str
    bias: str | None
    act: str | None


def plain_mlp(base: nn.Module, names: list[str] | None = None) -> list[Layer] | None:
    """The layers of ``base`` if it is a plain MLP: a Sequential (``base`` itself or ``base.net``, as fedleak's
    ``mlp``) of an optional leading Flatten, then Linear layers each followed by at most one Tanh / ReLU /
    Sigmoid, no buffers, and no parameters beyond the Linear layers' (``names``, when given, must be exactly
    them). None for anything else."""
    seq = base if isinstance(base, nn.Sequential) else getattr(base, "net", None)
    if not isinstance(seq, nn.Sequential) or any(True for _ in base.buffers()):
        return None
    prefix = "" if seq is base else "net."
    layers: list[Layer] = []
    used: list[str] = []
    for i, (name, m) in enumerate(seq.named_children()):
        if isinstance(m, nn.Flatten) and i == 0 and m.start_dim == 1 and m.end_dim == -1:
            continue
        if isinstance(m, nn.Linear):
            w, b = f"{prefix}{name}.weight", (f"{prefix}{name}.bias" if m.bias is not None else None)
            layers.append(Layer(w, b, None))
            used += [w] + ([b] if b else [])
        elif type(m) in ACTIVATION_NAMES and layers and layers[-1].act is None:
            layers[-1] = Layer(layers[-1].weight, layers[-1].bias, ACTIVATION_NAMES[type(m)])
        else:
            return None
    own = [n for n, _ in base.named_parameters()]
    if not layers or sorted(used) != sorted(own) or (names is not None and sorted(used) != sorted(names)):
        return None
    return layers


def _activate(z: Tensor, act: str | None) -> Tensor:
    """The activation, in place on the fresh pre-activation ``z``."""
    if act == "tanh":  # tanh(z) = 2 sigmoid(2z) - 1: torch's CPU sigmoid is about 2.5x its tanh here (AVX2)
        return z.mul_(2).sigmoid_().mul_(2).sub_(1)
    if act == "relu":
        return z.relu_()
    if act == "sigmoid":
        return z.sigmoid_()
    return z


def _through_activation(d: Tensor, h: Tensor, act: str | None) -> Tensor:
    """The gradient ``d`` with respect to the activation's output ``h``, taken back to its input (in place)."""
    if act == "tanh":
        return d.mul_(1 - h * h)
    if act == "relu":
        return d.mul_(h > 0)
    if act == "sigmoid":
        return d.mul_(h * (1 - h))
    return d


def constant_columns(x: Tensor) -> Tensor:
    """(D,) bool: the input columns of ``x`` (N, D) that hold the same value in every row (e.g. an image's
    border pixels over a whole data pool). The first layer's weights on such a column act as part of its bias
    and their gradient is the bias gradient times that value, so :func:`forward` and :func:`backward` can
    leave them out of the big matmuls (``const``)."""
    return (x == x[:1]).all(0)


def forward(
    layers: list[Layer], p: dict[str, Tensor], x: Tensor, const: tuple[Tensor, Tensor] | None = None
) -> tuple[Tensor, list[Tensor]]:
    """Logits (K, B, C) of the K models on their own batches ``x`` (K, B, D), and every layer's input and
    output (kept for :func:`backward`). ``p`` maps each parameter name to its stacked (K, ...) tensor.

    With ``const = (values (Dc,), weights (K, H, Dc))`` the records also have Dc more input columns, the same
    ``values`` in every record, on which the first layer has ``weights`` (``p`` then holds its weights on the
    D columns of ``x`` only): they enter as the bias ``weights @ values``."""
    h = x
    kept = [h]
    for i, la in enumerate(layers):
        wt = p[la.weight].transpose(1, 2)
        bias = None if la.bias is None else p[la.bias]
        if i == 0 and const is not None:
            w = const[1]
            extra = torch.mv(w.reshape(-1, w.shape[2]), const[0]).view(w.shape[:2])  # (K, H), one matvec
            bias = extra if bias is None else extra.add_(bias)
        z = torch.bmm(h, wt) if bias is None else torch.baddbmm(bias.unsqueeze(1), h, wt)
        h = _activate(z, la.act)
        kept.append(h)
    return h, kept


def cross_entropy_grad(logits: Tensor, y: Tensor, weight: Tensor | float) -> Tensor:
    """d loss / d logits (K, B, C) of each model's weighted cross-entropy: ``(softmax - onehot) * weight``;
    ``weight`` 1/B gives the batch mean of ``F.cross_entropy``, a (K, B, 1) tensor per-record weights (0 for
    padding)."""
    d = logits.softmax(-1)
    d.scatter_add_(2, y.unsqueeze(2), torch.full(y.unsqueeze(2).shape, -1.0, dtype=d.dtype, device=d.device))
    return d.mul_(weight)


def backward(
    layers: list[Layer],
    p: dict[str, Tensor],
    kept: list[Tensor],
    dout: Tensor,
    g: dict[str, Tensor],
    beta: float = 0.0,
    const: tuple[Tensor, Tensor] | None = None,
    first_bias_scale: float = 1.0,
) -> None:
    """Back-propagate ``dout`` (d loss / d logits, (K, B, C)) through the layers whose inputs and outputs
    :func:`forward` kept, into ``g[name]`` (one (K, ...) tensor per name): ``g = beta * g + gradient``, in place,
    the weight's inside the batched matmul (``beta`` = SGD's momentum makes ``g`` the momentum buffer; 0
    overwrites whatever ``g`` held). ``const = (values (Dc,), into (K, H, Dc))``: as in :func:`forward`, and
    the first layer's gradient on those columns goes to ``into`` the same way. ``first_bias_scale`` multiplies
    the first layer's bias gradient (the folded constant columns of ``references._steps_plain_mlp``)."""
    d = dout
    for i in range(len(layers) - 1, -1, -1):
        la = layers[i]
        d = _through_activation(d, kept[i + 1], la.act)
        g[la.weight].baddbmm_(d.transpose(1, 2), kept[i], beta=beta)
        summed = d.sum(1) if la.bias is not None or (i == 0 and const is not None) else None
        if la.bias is not None:
            scale = first_bias_scale if i == 0 else 1.0
            if beta:
                g[la.bias].mul_(beta).add_(summed, alpha=scale)
            else:
                g[la.bias].copy_(summed)
                if scale != 1.0:
                    g[la.bias].mul_(scale)
        if i == 0 and const is not None:  # outer product: (K, H, 1) x (K, 1, Dc)
            values = const[0].view(1, 1, -1).expand(len(d), 1, -1)
            const[1].baddbmm_(summed.unsqueeze(2), values, beta=beta)
        if i > 0:
            d = torch.bmm(d, p[la.weight])
