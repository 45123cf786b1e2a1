"""DLG's objective for plain chains of layers, with its gradient in the dummy records written out: no autograd.

A DLG-style attack spends nearly all its time in one computation, repeated thousands of times per target: replay
the client's gradient for the dummy records, take its squared distance to the update, and differentiate that
distance with respect to the records (a double backward). Where the network is a chain (an elementwise affine
map of its input, then convolutions and linear layers, each followed by at most one elementwise activation,
with flattening between; DLG's LeNet, fedleak's MLPs), both passes are a few matrix products per layer, and P
problems (targets, restarts, each with its own weights or all with one set) go through them together in batched
products. Autograd and ``vmap`` compute the same numbers with a graph per evaluation and, for many problems,
grouped convolutions (``bench/inversion_engine.py``).

The arithmetic, for one problem of N records with labels q (one-hot, or softmax of DLG's label logits), layers
l = 1..L, u_l the unfolding of layer l's input (the identity for a linear layer) and u_l^T its adjoint (fold):

    forward    z_l = W_l u_l(a_{l-1}) + b_l,   a_l = s_l(z_l),   a_0 = the records through the affine map
    backward   d_L = (softmax(z_L) - q) / N,   e_l = u_{l+1}^T(W_{l+1}^T d_{l+1}),   d_l = s_l'(z_l) e_l
    replayed   G_l = d_l u_l(a_{l-1})^T,   g_l = sum of d_l (the bias)
    objective  f = sum_l |G_l - T_l|^2 + |g_l - t_l|^2,   R_l = 2 (G_l - T_l),   r_l = 2 (g_l - t_l)

and the reverse of both passes (capitals: the adjoint of each lower-case quantity), up the layers for the
backward pass's d_l, then down for the forward pass's z_l:

    D_l = R_l u_l(a_{l-1}) + r_l + W_l u_l(E_{l-1}),   E_l = s_l'(z_l) D_l,   Z_l = s_l''(z_l) e_l D_l
    Z_L = J_softmax(z_L) D_L / N   (and for label logits y: -J_softmax(y) D_L / N)
    A_{l-1} = u_l^T(W_l^T Z_l + R_l^T d_l),   Z_{l-1} += s_{l-1}'(z_{l-1}) A_{l-1}

A_0 through the affine map is the gradient in the records. ``ChainMatch.from_module`` returns None for anything
else (pooling, normalisation, skips, other activations): those networks keep the general engines.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

# the activations written out: s(z) and, from its output (and input), s' and s''
_ACTS = {nn.Sigmoid: "sigmoid", nn.Tanh: "tanh", nn.ReLU: "relu", nn.Identity: None}


@dataclass(frozen=True)
class _Layer:
    """One convolution or linear layer of the chain and the activation after it (None: none)."""

    name: str  # the module's qualified name: its parameters are name.weight, name.bias
    conv: dict | None  # F.unfold's geometry (kernel_size, dilation, padding, stride); None for a linear layer
    act: str | None
    bias: bool


def _derivatives(act: str | None, z: Tensor, a: Tensor) -> tuple[Tensor | None, Tensor | None]:
    """s'(z) (None where it is 1) and s''(z) (None where it is 0) from the activation's input z and output a."""
    if act == "sigmoid":
        d1 = a * (1 - a)
        return d1, d1 * (1 - 2 * a)
    if act == "tanh":
        d1 = 1 - a * a
        return d1, -2 * a * d1
    if act == "relu":
        return (z > 0).to(z.dtype), None
    return None, None


def _times(t: Tensor, d: Tensor | None) -> Tensor:
    return t if d is None else t * d


class ChainMatch:
    """The l2 gradient-matching objective of a chain network and its gradient in the records, for P problems."""

    def __init__(self, layers: list[_Layer], scale: str | None = None, shift: str | None = None) -> None:
        """``layers`` in order; ``scale``, ``shift``: the buffers of the input's affine map (None: none)."""
        self.layers, self.scale, self.shift = layers, scale, shift
        self._indices: dict[tuple, Tensor] = {}  # each convolution's gather index, by input shape and records

    @classmethod
    def from_module(cls, module: nn.Module) -> ChainMatch | None:
        """The chain read from ``module``'s traced forward, or None where it is not one."""
        try:
            graph = fx.symbolic_trace(module).graph
        except Exception:  # noqa: BLE001 - control flow or anything fx cannot trace: not a chain
            return None
        mods = dict(module.named_modules())
        layers: list[_Layer] = []
        scale = shift = None
        value = None  # the node carrying the running value
        flat = False  # flattened, or past a linear layer: no convolution from here on
        act: str | None | bool = False  # the last layer's activation; False: none yet, and room for one
        for node in graph.nodes:
            op, target, args = node.op, node.target, node.args
            if op == "get_attr":
                continue
            if op == "placeholder" and value is None:
                value = node
                continue
            if op == "output":
                ok = args[0] is value and layers and layers[-1].conv is None and act is False
                return cls(layers, scale, shift) if ok else None
            if not args or node.kwargs:
                return None
            m = mods.get(target) if op == "call_module" else None
            if op == "call_function" and target in (operator.mul, operator.add) and not layers and len(args) == 2:
                # the input's affine map x * scale + shift, before any layer
                other = args[1] if args[0] is value else args[0] if args[1] is value else None
                if getattr(other, "op", None) != "get_attr":
                    return None
                if target is operator.mul and scale is None and shift is None:
                    scale = other.target
                elif target is operator.add and shift is None:
                    shift = other.target
                else:
                    return None
            elif args[0] is not value or len(args) != (2 if op == "call_method" else 1):
                return None
            elif (op == "call_method" and target == "flatten" and args[1] == 1) or (
                type(m) is nn.Flatten and (m.start_dim, m.end_dim) == (1, -1)
            ):
                flat = True
            elif type(m) in _ACTS and layers and act is False:
                act = _ACTS[type(m)]
                layers[-1] = _Layer(layers[-1].name, layers[-1].conv, act, layers[-1].bias)
            elif type(m) is nn.Conv2d and not flat and m.groups == 1 and m.padding_mode == "zeros":
                if isinstance(m.padding, str):
                    return None
                geometry = {"kernel_size": m.kernel_size, "dilation": m.dilation, "padding": m.padding}
                layers.append(_Layer(target, geometry | {"stride": m.stride}, None, m.bias is not None))
                act = False
            elif type(m) is nn.Linear:
                layers.append(_Layer(target, None, None, m.bias is not None))
                flat, act = True, False
            else:
                return None
            value = node
        return None

    def names(self) -> list[str]:
        """The parameters the chain replays, in its order."""
        return [f"{ly.name}.{k}" for ly in self.layers for k in (("weight", "bias") if ly.bias else ("weight",))]

    def buffers(self) -> set[str]:
        """The buffers the input's affine map reads."""
        return {b for b in (self.scale, self.shift) if b is not None}

    def _index(self, i: int, shape: tuple[int, ...], n: int, device: torch.device) -> Tensor:
        """Convolution ``i``'s unfolding as a gather: for an input (C, N, H, W) per problem (channels first, the
        records inside), the position in its zero-padded copy (C, N, H + 2 ph, W + 2 pw) that each column entry
        (C kh kw, N Ho Wo) reads; its adjoint (the fold) adds each entry back there."""
        key = (i, shape, n, device)
        if key not in self._indices:
            g = self.layers[i].conv
            assert g is not None
            (c, h, w), (kh, kw), (dh, dw), (ph, pw), (sh, sw) = (
                shape,
                g["kernel_size"],
                g["dilation"],
                g["padding"],
                g["stride"],
            )
            hp, wp = h + 2 * ph, w + 2 * pw
            ho, wo = conv_out_hw((h, w), g)
            ar = torch.arange
            idx = (
                ar(c).view(c, 1, 1, 1, 1, 1) * (n * hp * wp)
                + (ar(kh) * dh).view(1, kh, 1, 1, 1, 1) * wp
                + (ar(kw) * dw).view(1, 1, kw, 1, 1, 1)
                + ar(n).view(1, 1, 1, n, 1, 1) * (hp * wp)
                + (ar(ho) * sh).view(1, 1, 1, 1, ho, 1) * wp
                + (ar(wo) * sw).view(1, 1, 1, 1, 1, wo)
            )
            self._indices[key] = idx.flatten().to(device)
        return self._indices[key]

    def _unfold(self, i: int, a: Tensor) -> Tensor:
        """(P, C, N, H, W) -> the columns (P, C kh kw, N Ho Wo) of convolution ``i``."""
        g = self.layers[i].conv
        p, c, n = a.shape[:3]
        ph, pw = g["padding"]  # type: ignore[index]
        padded = F.pad(a, (pw, pw, ph, ph)) if ph or pw else a.contiguous()
        idx = self._index(i, (c, *a.shape[3:]), n, a.device)
        return padded.view(p, -1).index_select(1, idx).view(p, c * self._taps(i), -1)

    def _fold(self, i: int, cols: Tensor, shape: tuple[int, ...]) -> Tensor:
        """The adjoint of ``_unfold``: columns (P, C kh kw, N Ho Wo) back to (P, C, N, H, W), ``shape`` = (C, N,
        H, W)."""
        g = self.layers[i].conv
        (ph, pw), (c, n, h, w), p = g["padding"], shape, cols.shape[0]  # type: ignore[index]
        out = cols.new_zeros(p, c * n * (h + 2 * ph) * (w + 2 * pw))
        out.index_add_(1, self._index(i, (c, h, w), n, cols.device), cols.reshape(p, -1))
        return out.view(p, c, n, h + 2 * ph, w + 2 * pw)[..., ph : ph + h, pw : pw + w]

    def _taps(self, i: int) -> int:
        k = self.layers[i].conv["kernel_size"]  # type: ignore[index]
        return k[0] * k[1]

    def __call__(
        self,
        x: Tensor,
        labels: Tensor,
        theta: dict[str, Tensor],
        consts: dict[str, Tensor],
        target: dict[str, Tensor],
        shared: bool,
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Each problem's objective (P,), its gradient in ``x`` (P, N, ...) and, for label logits (``labels``
        float, P x N x C), in them (else None). ``labels``: class indices (P, N) or label logits; ``theta``: each
        parameter (P, ...) or, ``shared``, one for all; ``target``: each parameter's update (P, ...).

        Layouts: a convolution's input is (P, C, N, H, W) (channels first, so that its columns (P, C kh kw,
        N Ho Wo) and output (P, O, N Ho Wo) multiply by the weights (P, O, C kh kw) in one batched product over
        all records); a linear layer's input is (P, N, F)."""
        p, n = x.shape[0], x.shape[1]
        s = None if self.scale is None else consts[self.scale]
        a = x if s is None else x * s
        if self.shift is not None:
            a = a + consts[self.shift]
        L = len(self.layers)
        convs = [ly.conv is not None for ly in self.layers]
        if convs[0]:
            a = a.transpose(1, 2)  # (P, C, N, H, W)

        def weight(ly: _Layer) -> Tensor:  # (P, O, F) whatever the layer
            w = theta[f"{ly.name}.weight"]
            w = w.reshape(w.shape[0], -1) if shared else w.reshape(w.shape[0], w.shape[1], -1)
            return w.expand(p, *w.shape) if shared else w

        def bias(ly: _Layer, conv: bool) -> Tensor:  # (P or 1, O, 1) for convolutions, (P or 1, 1, O) otherwise
            b = theta[f"{ly.name}.bias"]
            b = b.unsqueeze(0) if shared else b
            return b.unsqueeze(-1) if conv else b.unsqueeze(1)

        ws = [weight(ly) for ly in self.layers]
        ins: list[Tensor] = []  # each layer's input as it multiplies: columns (P, F, N L) or (P, N, F)
        shapes: list[tuple[int, ...]] = []  # a convolution's input (C, N, H, W); a linear layer's per record
        zs: list[Tensor] = []  # each layer's output before its activation: (P, O, N L) or (P, N, O)
        outs: list[Tensor] = []  # and after it
        for i, (ly, w) in enumerate(zip(self.layers, ws, strict=True)):
            if convs[i]:
                shapes.append(tuple(a.shape[1:]))
                cols = self._unfold(i, a)
                z = torch.baddbmm(bias(ly, True), w, cols) if ly.bias else w @ cols
                ins.append(cols)
            else:
                if i and convs[i - 1]:  # (P, C, N, H, W) -> (P, N, C H W)
                    a = a.transpose(1, 2)
                shapes.append(tuple(a.shape[2:]))
                inp = a.reshape(p, n, -1)
                z = torch.baddbmm(bias(ly, False), inp, w.transpose(1, 2)) if ly.bias else inp @ w.transpose(1, 2)
                ins.append(inp)
            out = _activate(ly.act, z)
            zs.append(z)
            outs.append(out)
            if convs[i]:
                ho, wo = conv_out_hw(shapes[-1][2:], ly.conv)  # type: ignore[arg-type]
                a = out.view(p, z.shape[1], n, ho, wo)
            else:
                a = out

        def to_z(i: int, t: Tensor) -> Tensor:
            """A tensor in layer ``i``'s input space (as ``_fold`` or a linear layer's (P, N, F) gives it) in
            the layout of layer i - 1's output."""
            if convs[i]:
                return t.reshape(zs[i - 1].shape)
            if convs[i - 1]:
                return t.view(p, n, zs[i - 1].shape[1], -1).transpose(1, 2).reshape(zs[i - 1].shape)
            return t

        # backward: the replayed gradient, layer by layer from the top
        prob = torch.softmax(zs[-1], -1)
        soft = None
        if labels.is_floating_point():  # DLG's label logits: soft labels
            soft = torch.softmax(labels, -1)
            d = (prob - soft) / n
        else:
            # the true class's p - 1 as minus the other classes' sum: where the model is sure, p - 1 in float32 loses
            # digits (on lfw-faces' LeNet near a solution the gradient's error was 2x vmap's; with this, equal)
            at = labels.unsqueeze(-1)
            others = prob.scatter(-1, at, 0.0)
            d = others.scatter(-1, at, -others.sum(-1, keepdim=True)) / n
        derivs = [_derivatives(ly.act, z, o) for ly, z, o in zip(self.layers, zs, outs, strict=True)]
        ds: list[Tensor] = [d] * L  # d_l, the loss's gradient in z_l
        es: list[Tensor] = [d] * L  # e_l, that in a_l
        res: list[Tensor] = [d] * L  # R_l (P, O, F)
        rbias: list[Tensor | None] = [None] * L  # r_l, shaped as ``bias``
        value = torch.zeros(p, dtype=x.dtype, device=x.device)
        for i in range(L - 1, -1, -1):
            ly, w, d = self.layers[i], ws[i], ds[i]
            if convs[i]:
                grad_w, grad_b = d @ ins[i].transpose(1, 2), (d.sum(2) if ly.bias else None)
            else:
                grad_w, grad_b = d.transpose(1, 2) @ ins[i], (d.sum(1) if ly.bias else None)
            r = grad_w - target[f"{ly.name}.weight"].reshape(grad_w.shape)
            value = value + r.pow(2).flatten(1).sum(1)
            res[i] = 2 * r
            if grad_b is not None:
                rb = grad_b - target[f"{ly.name}.bias"].reshape(grad_b.shape)
                value = value + rb.pow(2).sum(1)
                rbias[i] = 2 * (rb.unsqueeze(-1) if convs[i] else rb.unsqueeze(1))
            if i == 0:
                break
            back = self._fold(i, w.transpose(1, 2) @ d, shapes[i]) if convs[i] else d @ w
            es[i - 1] = to_z(i, back)
            ds[i - 1] = _times(es[i - 1], derivs[i - 1][0])

        # reverse of the backward pass, from the bottom up: D_l, and the second-order parts of Z_l
        zbar: list[Tensor | None] = [None] * L
        ebar = None  # E_{l-1}, in the layout of z_{l-1}
        big_d = d
        for i in range(L):
            ly, w, rb = self.layers[i], ws[i], rbias[i]
            if convs[i]:
                big_d = res[i] @ ins[i] if rb is None else torch.baddbmm(rb, res[i], ins[i])  # (P, O, N L)
                if ebar is not None:
                    big_d = torch.baddbmm(big_d, w, self._unfold(i, ebar.view(p, *shapes[i])))
            else:
                rt = res[i].transpose(1, 2)
                big_d = ins[i] @ rt if rb is None else torch.baddbmm(rb, ins[i], rt)  # (P, N, O)
                if ebar is not None:
                    if convs[i - 1]:
                        ebar = ebar.view(p, -1, n, ebar.shape[2] // n).transpose(1, 2)
                    big_d = torch.baddbmm(big_d, ebar.reshape(p, n, -1), w.transpose(1, 2))
            if i == L - 1:
                break
            d1, d2 = derivs[i]
            ebar = _times(big_d, d1)
            if d2 is not None:
                zbar[i] = big_d * es[i] * d2
        # through the softmax of the logits (and of the label logits)
        zbar[L - 1] = prob * (big_d - (prob * big_d).sum(-1, keepdim=True)) / n
        grad_y = None if soft is None else -soft * (big_d - (soft * big_d).sum(-1, keepdim=True)) / n

        # reverse of the forward pass, from the top down: Z_l to A_{l-1}
        a_bar = zbar[L - 1]
        for i in range(L - 1, -1, -1):
            w, z_bar = ws[i], zbar[i]
            assert z_bar is not None
            if convs[i]:
                cols_bar = torch.baddbmm(w.transpose(1, 2) @ z_bar, res[i].transpose(1, 2), ds[i])
                a_bar = self._fold(i, cols_bar, shapes[i])
            else:
                a_bar = torch.baddbmm(z_bar @ w, ds[i], res[i])
            if i == 0:
                break
            part = _times(to_z(i, a_bar), derivs[i - 1][0])
            zbar[i - 1] = part if zbar[i - 1] is None else zbar[i - 1] + part
        gx = a_bar.transpose(1, 2) if convs[0] else a_bar
        gx = gx.reshape(x.shape)
        return value, gx if s is None else gx * s, grad_y


def _activate(act: str | None, z: Tensor) -> Tensor:
    if act == "sigmoid":
        return torch.sigmoid(z)
    if act == "tanh":
        return torch.tanh(z)
    if act == "relu":
        return torch.relu(z)
    return z


def conv_out_hw(hw: tuple[int, ...], conv: dict) -> tuple[int, int]:
    """A convolution's output height and width for an input of ``hw``, its geometry as F.unfold takes it."""
    return tuple(  # type: ignore[return-value]
        (hw[k] + 2 * conv["padding"][k] - conv["dilation"][k] * (conv["kernel_size"][k] - 1) - 1) // conv["stride"][k]
        + 1
        for k in range(2)
    )


__all__ = ["ChainMatch", "conv_out_hw"]
