"""Client-side transforms of an update before it is sent: top-k pruning, quantization, Gaussian noise, norm
clipping. Each is a pure tensor function over a payload (``dict[name, Tensor]``) plus a small frozen
dataclass that applies it to a :class:`~fedleak.fl.ClientUpdate` (the ``(update, generator) -> update``
transform that ``fl`` accepts).

    >>> import torch
    >>> p = prune_payload({"w": torch.tensor([0.1, -3.0, 0.2, 2.0])}, 0.5)
    >>> p["w"].tolist()
    [0.0, -3.0, 0.0, 2.0]
    >>> round(float(global_norm(clip_payload({"w": torch.tensor([3.0, 4.0])}, 1.0))), 6)
    1.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from fedleak.fl.update import ClientUpdate

Payload = dict[str, Tensor]


def global_norm(payload: Payload) -> Tensor:
    """The L2 norm of all entries of a payload taken together."""
    return torch.sqrt(sum((v.detach().double() ** 2).sum() for v in payload.values())).float()


def clip_payload(payload: Payload, clip: float) -> Payload:
    """Scale the whole payload so that its global L2 norm is at most ``clip`` (unchanged if already below)."""
    norm = float(global_norm(payload))
    scale = min(1.0, clip / (norm + 1e-12))
    return {k: v * scale for k, v in payload.items()}


def keep_count(numel: int, fraction: float) -> int:
    """How many entries survive pruning a fraction ``fraction`` of ``numel``: round((1 - P) * numel)."""
    return int(round((1.0 - fraction) * numel))


def prune_tensor(t: Tensor, fraction: float) -> Tensor:
    """Zero the ``fraction`` of entries of smallest magnitude; exactly ``keep_count`` entries are kept."""
    k = keep_count(t.numel(), fraction)
    flat = t.reshape(-1)
    out = torch.zeros_like(flat)
    if k > 0:
        idx = flat.abs().topk(k, sorted=False).indices
        out[idx] = flat[idx]
    return out.reshape(t.shape)


def prune_payload(payload: Payload, fraction: float, scope: str = "layer") -> Payload:
    """Top-k pruning of each tensor (``scope="layer"``, the DLG paper's defense) or of the whole update."""
    if scope == "layer":
        return {k: prune_tensor(v, fraction) for k, v in payload.items()}
    names = list(payload)
    flat = prune_tensor(torch.cat([payload[n].reshape(-1) for n in names]), fraction)
    out, i = {}, 0
    for n in names:
        m = payload[n].numel()
        out[n] = flat[i : i + m].reshape(payload[n].shape)
        i += m
    return out


def quantize_tensor(t: Tensor, bits: int, generator: torch.Generator | None = None) -> Tensor:
    """Symmetric uniform quantization to ``2**(bits-1) - 1`` levels each side of 0, scaled by max |t|.

    One bit keeps the sign times the mean magnitude (signSGD-like). With ``generator``, rounding is stochastic
    (unbiased); without it, to the nearest level.
    """
    if bits >= 32 or t.numel() == 0:
        return t.clone()
    if bits == 1:
        return torch.sign(t) * t.abs().mean()
    levels = 2 ** (bits - 1) - 1
    scale = t.abs().max()
    if float(scale) == 0.0:
        return t.clone()
    z = t / scale * levels
    if generator is None:
        q = torch.round(z)
    else:
        low = torch.floor(z)
        u = torch.rand(z.shape, generator=generator).to(z.device)
        q = low + (u < (z - low)).to(z.dtype)
    return q / levels * scale


def gaussian_noise(payload: Payload, sigma: float, generator: torch.Generator) -> Payload:
    """Add i.i.d. N(0, sigma^2) to every entry (drawn on the CPU from ``generator``, then moved)."""
    return {
        k: v + sigma * torch.randn(v.shape, generator=generator, dtype=v.dtype).to(v.device) for k, v in payload.items()
    }


@dataclass(frozen=True)
class Prune:
    """``prune:P``: keep the largest (1 - P) of the entries of each update tensor, zero the rest."""

    fraction: float
    scope: str = "layer"

    def __call__(self, update: ClientUpdate, generator: torch.Generator) -> ClientUpdate:
        return update.replace(payload=prune_payload(update.payload, self.fraction, self.scope))


@dataclass(frozen=True)
class Quantize:
    """``quantize:BITS``: uniform quantization of each update tensor (``stochastic=1``: unbiased rounding)."""

    bits: int
    stochastic: bool = False

    def __call__(self, update: ClientUpdate, generator: torch.Generator) -> ClientUpdate:
        g = generator if self.stochastic else None
        return update.replace(payload={k: quantize_tensor(v, self.bits, g) for k, v in update.payload.items()})


@dataclass(frozen=True)
class Noise:
    """``noise:SIGMA``: Gaussian noise of standard deviation SIGMA on every entry (no privacy accounting)."""

    sigma: float

    def __call__(self, update: ClientUpdate, generator: torch.Generator) -> ClientUpdate:
        return update.replace(payload=gaussian_noise(update.payload, self.sigma, generator))


@dataclass(frozen=True)
class Clip:
    """``clip:C``: scale the update so that its global L2 norm is at most C (no noise)."""

    clip: float

    def __call__(self, update: ClientUpdate, generator: torch.Generator) -> ClientUpdate:
        return update.replace(payload=clip_payload(update.payload, self.clip))


def expected_kept(shapes: list[tuple[int, ...]], fraction: float) -> int:
    """Entries kept by layer-wise pruning of tensors of these shapes (for reports)."""
    return sum(keep_count(math.prod(s), fraction) for s in shapes)
