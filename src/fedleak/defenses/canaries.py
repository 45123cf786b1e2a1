"""Canaries for auditing a DP guarantee: values handed to the federation, as defenses are.

Each canary is included in the training or held out by a seeded fair coin (:func:`draw_inclusion`), so one
training run gives m trials. The scorer (:mod:`fedleak.audit.dpaudit`) never reads the coin.

- :class:`GradientCanaries` (sample-level DP-SGD, white-box): canary i is a crafted per-sample gradient, a
  Dirac of size ``magnitude`` in coordinate ``coords[i]`` of the flattened parameter vector; the included
  ones join the host client's per-sample gradients in every DP-SGD step, and are clipped with them (to at
  most ``clip``) before the noise (``DPSGDTrainer.canaries``). Coordinates are distinct.
- :class:`CanaryClientAggregator` (client-level DP-FedAvg): canary client i sends, in every round, the update
  ``magnitude`` * u_i for a random unit direction u_i; the included ones are handed to the wrapped aggregator
  beside the real clients' updates, which clips and noises them like any client's. On Flower, the same canary
  clients (:func:`unit_directions`, scored by :func:`cosine_scores`) join the replies Flower's DP wrapper
  aggregates (:class:`fedleak.flower.dp_audit.CanaryClients`).

    >>> import torch
    >>> c = GradientCanaries.draw(m=4, dim=10, seed=2, host=("h",), magnitude=2.0)
    >>> c.included.tolist(), len(set(c.coords.tolist()))
    ([False, True, False, True], 4)
    >>> s = c.clipped_sum({"w": torch.zeros(5, 10)}, clip=1.0)["w"]     # each canary clipped from 2 to 1
    >>> float(s.sum()), int((s != 0).sum())
    (2.0, 2)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fedleak.fl.update import ClientUpdate


def draw_inclusion(m: int, seed: int) -> np.ndarray:
    """A fair coin per canary (True: included in the training), from ``seed`` alone."""
    return np.random.default_rng([seed, 0xCA7A]).random(m) < 0.5


def unit_directions(m: int, dim: int, seed: int) -> Tensor:
    """``m`` random unit rows of length ``dim`` (Gaussian, normalised), from ``seed`` alone: canary clients'
    update directions."""
    u = torch.randn(m, dim, generator=torch.Generator().manual_seed(seed))
    return u / u.norm(dim=1, keepdim=True)


def cosine_scores(directions: Tensor, delta: Tensor) -> np.ndarray:
    """Each canary client's score (Andrew et al. 2024): the cosine between its direction (a row of
    ``directions``) and the model delta the server ends with, in float64.

    >>> cosine_scores(torch.eye(3), torch.tensor([3.0, 4.0, 0.0])).round(2).tolist()
    [0.6, 0.8, 0.0]
    """
    d = delta.detach().double().reshape(-1)
    dirs = directions.to(d.device).double()
    return ((dirs @ d) / (d.norm() + 1e-30)).cpu().numpy()


def flatten(payload: dict[str, Tensor]) -> Tensor:
    return torch.cat([v.reshape(-1) for v in payload.values()])


def unflatten(flat: Tensor, like: dict[str, Tensor]) -> dict[str, Tensor]:
    out, i = {}, 0
    for k, v in like.items():
        out[k] = flat[i : i + v.numel()].reshape(v.shape).to(v.dtype)
        i += v.numel()
    return out


@dataclass
class GradientCanaries:
    """Dirac gradient canaries for the client whose dataset fingerprint is ``host`` (see module docstring)."""

    coords: Tensor
    included: np.ndarray
    magnitude: float = 1.0
    host: Any = None
    steps_seen: int = 0

    @classmethod
    def draw(cls, m: int, dim: int, seed: int, host: Any, magnitude: float = 1.0) -> GradientCanaries:
        if not 1 <= m <= dim:
            from fedleak.errors import FedleakInputError

            raise FedleakInputError(
                f"--num-canaries {m}: gradient canaries take distinct coordinates; give 1 to {dim} for this model"
            )
        g = torch.Generator().manual_seed(seed)
        coords = torch.randperm(dim, generator=g)[:m]
        return cls(coords, draw_inclusion(m, seed), float(magnitude), host)

    def hosts(self, unit: Any) -> bool:
        return unit == self.host

    def raw_sum(self, like: dict[str, Tensor]) -> dict[str, Tensor]:
        """The included canaries' crafted gradients summed, before any clipping, shaped like ``like``'s
        per-parameter tensors (the leading per-sample dimension of ``like`` dropped)."""
        self.steps_seen += 1
        shapes = {k: v[0] for k, v in like.items()}
        flat = torch.zeros(sum(v.numel() for v in shapes.values()), dtype=torch.float64)
        flat[self.coords[torch.as_tensor(self.included)]] = self.magnitude
        dev = next(iter(like.values())).device
        return {k: v.to(dev) for k, v in unflatten(flat, shapes).items()}

    def clipped_sum(self, like: dict[str, Tensor], clip: float) -> dict[str, Tensor]:
        """The included canaries' gradients, each clipped to norm ``clip`` as DP-SGD clips a sample's, summed."""
        scale = min(1.0, clip / self.magnitude)
        return {k: v * scale for k, v in self.raw_sum(like).items()}


@dataclass
class CanaryClientAggregator:
    """Wraps a client-level DP aggregator: the included canary clients' updates join every round's updates.

    ``directions``: (m, d) unit rows over the flattened parameters; a canary client's update is
    ``magnitude`` times its row (clipped by the wrapped aggregator like any update).
    """

    inner: Any
    directions: Tensor
    included: np.ndarray
    magnitude: float = 1.0
    rounds: int = 0
    canary_updates: list[ClientUpdate] = field(default_factory=list, repr=False)

    @classmethod
    def draw(cls, inner: Any, m: int, dim: int, seed: int, magnitude: float = 1.0) -> CanaryClientAggregator:
        return cls(inner, unit_directions(m, dim, seed), draw_inclusion(m, seed), float(magnitude))

    def __call__(self, updates: list[ClientUpdate], generator: torch.Generator) -> dict[str, Tensor]:
        like = updates[0].payload
        extra = [
            updates[0].replace(
                payload=unflatten(self.magnitude * self.directions[i].to(next(iter(like.values())).device), like),
                client=None,
                num_samples=1,
                labels=None,
                buffers=None,
            )
            for i in np.flatnonzero(self.included)
        ]
        self.rounds += 1
        return self.inner(updates + extra, generator)

    def privacy(self) -> dict[str, Any]:
        return self.inner.privacy()
