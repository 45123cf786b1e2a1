"""Few gradient-matching problems in one ordinary autograd graph, each with its own copy of the weights.

The engine's general way to evaluate P independent problems is ``torch.func.vmap`` over one problem's
objective (a double backward through the replayed gradient). For networks made only of small convolutions,
linear layers and per-record operations, the same P objectives can be written without the transform: the P
problems' records go through the network as one batch of P x N records, each convolution (unfolded) and linear
layer multiplying by its problem's own weights, and the gradient of the summed per-problem losses with respect to
the stacked weights is every problem's own gradient. The same arithmetic with less dispatch, which pays for runs
of few problems (a target attacked alone, with its restarts; a retry): ``bench/inversion_engine.py``. Chains of
convolutions, linear layers and elementwise activations (DLG's LeNet) take ``chain.py`` instead, which writes the
objective's gradient out and is faster still at any number of problems; this graph serves the rest (pooling, other
activations).

Which networks qualify is decided twice: by the module types (anything else, BatchNorm in particular, whose batch
statistics would mix the problems, keeps the vmap engine), and by a check before each run, where the stacked
objective and its gradient at a fixed random point must equal the vmapped ones (``agrees``).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedleak.attacks.inversion.chain import conv_out_hw
from fedleak.attacks.inversion.replay import LossFn, fedsgd_gradient, soft_cross_entropy

# per-record modules: they act on each record alone, so P x N records in one batch are P problems' records
_PER_RECORD = (
    nn.Sigmoid,
    nn.ReLU,
    nn.LeakyReLU,
    nn.Tanh,
    nn.GELU,
    nn.ELU,
    nn.SiLU,
    nn.Softplus,
    nn.Identity,
    nn.Flatten,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.Sequential,
)
# the engine runs up to this many problems stacked, more under vmap (bench/inversion_engine.py, DLG's LeNet, one
# record per problem: stacked faster up to 4 problems, vmap about as fast from 5 on and faster at 10 with one
# network for all)
STACKED_MAX = 4
# and only where each convolution's unfolded input stays this small per record (C kh kw x output positions; DLG's
# LeNet on 32 x 32 images: 19,200 at most; larger convolutions, not measured, keep PyTorch's kernels under vmap)
UNFOLD_LIMIT = 32768


class _StackedConv2d(nn.Conv2d):
    """A Conv2d whose weight may carry a leading problem dimension (P, O, C, kh, kw); its input is then P
    problems' records one after another, (P x N, C, H, W), each problem's unfolded and multiplied by its weights
    (for the small convolutions of the networks attacked here, cheaper to differentiate twice than PyTorch's
    convolution kernels)."""

    def forward(self, x: Tensor) -> Tensor:
        w, b = self.weight, self.bias
        if w.dim() == 4:
            return super().forward(x)
        p, o = w.shape[0], w.shape[1]
        n, (h, wd) = x.shape[0] // p, x.shape[-2:]
        cols = F.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)  # (P N, C kh kw, L)
        out = w.reshape(p, 1, o, -1) @ cols.view(p, n, cols.shape[1], cols.shape[2])  # (P, N, O, L)
        if b is not None:
            out = out + b.view(p, 1, o, 1)
        geometry = {"kernel_size": self.kernel_size, "dilation": self.dilation, "padding": self.padding}
        return out.reshape(p * n, o, *conv_out_hw((h, wd), geometry | {"stride": self.stride}))


class _StackedLinear(nn.Linear):
    """A Linear whose weight may carry a leading problem dimension (P, O, F); its input is (P x N, F)."""

    def forward(self, x: Tensor) -> Tensor:
        w, b = self.weight, self.bias
        if w.dim() == 2:
            return super().forward(x)
        p = w.shape[0]
        xs = x.view(p, x.shape[0] // p, x.shape[1])
        out = xs @ w.transpose(1, 2) if b is None else torch.baddbmm(b.unsqueeze(1), xs, w.transpose(1, 2))
        return out.reshape(x.shape[0], w.shape[1])


def stacked_twin(module: nn.Module, in_shape: tuple[int, ...]) -> nn.Module | None:
    """A copy of ``module`` whose convolutions and linear layers take stacked weights, or None where a module
    is not per-record, a convolution is not of the covered kind (groups, non-zero padding), or its unfolded input
    for one record of ``in_shape`` is larger than ``UNFOLD_LIMIT``."""
    for m in module.modules():
        if type(m) is nn.Conv2d:
            if m.groups != 1 or m.padding_mode != "zeros" or isinstance(m.padding, str):
                return None
        elif type(m) is not nn.Linear and not isinstance(m, _PER_RECORD) and m is not module:
            return None
    sizes: list[int] = []  # each convolution's unfolded input per record: C kh kw x output positions

    def unfolded(mod: nn.Module, inp: tuple, out: Tensor) -> None:
        sizes.append(mod.weight[0].numel() * out.shape[-2] * out.shape[-1])

    hooks = [m.register_forward_hook(unfolded) for m in module.modules() if type(m) is nn.Conv2d]
    try:
        with torch.no_grad():
            p = next(module.parameters())
            module(torch.zeros(1, *in_shape, dtype=p.dtype, device=p.device))
    finally:
        for h in hooks:
            h.remove()
    if any(n > UNFOLD_LIMIT for n in sizes):
        return None
    twin = copy.deepcopy(module)
    for m in twin.modules():
        if type(m) is nn.Conv2d:
            m.__class__ = _StackedConv2d
        elif type(m) is nn.Linear:
            m.__class__ = _StackedLinear
    return twin


def stacked_gradients(
    twin: nn.Module,
    params: dict[str, Tensor],
    consts: dict[str, Tensor],
    inputs: Tensor,
    targets: Tensor,
    shared: bool,
    loss_fn: LossFn = soft_cross_entropy,
) -> dict[str, Tensor]:
    """Each of P problems' gradient of ``loss_fn`` over its N records, stacked (P, ...) and differentiable in
    ``inputs`` (P, N, ...) and ``targets`` (P, N[, C]): the FedSGD replay (``replay.fedsgd_gradient``) of the
    P x N records through ``twin``. ``params``: one set for all problems (``shared``) or each problem's own."""
    p, n = inputs.shape[0], inputs.shape[1]
    if shared:  # each problem its own copy, so that each gets its own gradient
        params = {k: v.detach().unsqueeze(0).expand(p, *v.shape).contiguous() for k, v in params.items()}
    flat_x, flat_y = inputs.reshape(p * n, *inputs.shape[2:]), targets.reshape(p * n, *targets.shape[2:])
    # the mean over P x N records times P: the sum of the P problems' own mean losses
    return fedsgd_gradient(twin, params, consts, flat_x, flat_y, loss_fn=lambda out, t: loss_fn(out, t) * p)


def agrees(a: tuple[Tensor, ...], b: tuple[Tensor, ...], rtol: float = 1e-3) -> bool:
    """Two engines' (objective, gradient, ...) equal to ``rtol`` of each tensor's largest entry (float32
    arithmetic in another order differs by about 1e-6 relative)."""
    for x, y in zip(a, b, strict=True):
        if x is None or y is None:
            if x is not y:
                return False
            continue
        scale = float(y.abs().max())
        if not torch.isfinite(x).all() or float((x - y).abs().max()) > rtol * max(scale, 1e-30):
            return False
    return True


__all__ = ["STACKED_MAX", "UNFOLD_LIMIT", "agrees", "stacked_gradients", "stacked_twin"]
