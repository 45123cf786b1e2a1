"""What the server sees from one client in one round: the :class:`ClientUpdate`, and the threat model that
decides which metadata comes with it.

    >>> import torch
    >>> u = ClientUpdate("mlp", {}, {"w": torch.zeros(1)}, "gradient", num_samples=None, local_steps=None,
    ...                  local_lr=None, batch_size=None, labels=None)
    >>> u.require("num_samples", attack="demo")
    Traceback (most recent call last):
    ...
    fedleak.errors.FedleakInputError: attack 'demo' needs num_samples, which this view does not grant; ...
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Literal

import torch
from torch import Tensor

from fedleak.data.dataset import DataSpec
from fedleak.errors import FedleakInputError

GRANTABLE = ("num_samples", "local_steps", "local_lr", "batch_size", "labels")


@dataclass(frozen=True)
class ClientUpdate:
    """What crossed the wire, plus what the threat model grants. Attacks read only this."""

    model: str  # architecture spec, to rebuild it
    global_state: dict[str, Tensor]  # w0: the full state the server sent (parameters and buffers)
    payload: dict[str, Tensor]  # per parameter: the gradient (FedSGD) or w1 - w0 (FedAvg)
    kind: Literal["gradient", "delta"]
    num_samples: int | None
    local_steps: int | None
    local_lr: float | None
    batch_size: int | None
    labels: Tensor | None
    data_spec: DataSpec | None = None  # record shape and normalisation: the server knows the data format
    client: int | None = None  # which client (None: an aggregate of several)
    round: int | None = None
    num_clients: int = 1  # > 1 when the server sees only a sum (secure aggregation)
    train_mode: bool = True  # whether the client ran the model in train mode (BatchNorm batch statistics)
    buffers: dict[str, Tensor] | None = None  # the client's buffers after training (FedAvg sends them too)
    extras: dict = field(default_factory=dict)  # producer-specific facts (e.g. a malicious server's plan)

    def require(self, *names: str, attack: str) -> None:
        """Fail with one clear line when the view lacks metadata an attack needs."""
        missing = [n for n in names if getattr(self, n) is None]
        if missing:
            raise FedleakInputError(
                f"attack {attack!r} needs {', '.join(missing)}, which this view does not grant; "
                "grant it in the threat model or choose an attack that does without"
            )

    def replace(self, **changes: object) -> ClientUpdate:
        return replace(self, **changes)

    def to(self, device: torch.device | str) -> ClientUpdate:
        def mv(d: dict[str, Tensor] | None) -> dict[str, Tensor] | None:
            return None if d is None else {k: v.to(device) for k, v in d.items()}

        return replace(
            self,
            global_state=mv(self.global_state),
            payload=mv(self.payload),
            labels=None if self.labels is None else self.labels.to(device),
            buffers=mv(self.buffers),
        )


@dataclass(frozen=True)
class ThreatModel:
    """Which metadata an honest-but-curious server is granted beside the payload.

    The default grants what FL frameworks send in the clear (sample count and the local training
    hyperparameters the server itself configured) but not the labels.
    """

    num_samples: bool = True
    local_steps: bool = True
    local_lr: bool = True
    batch_size: bool = True
    labels: bool = False

    def view(self, update: ClientUpdate) -> ClientUpdate:
        """The update as this threat model lets the server see it."""
        hidden = {f.name: None for f in fields(self) if not getattr(self, f.name)}
        return replace(update, **hidden)

    @classmethod
    def from_grants(cls, grants: str | list[str]) -> ThreatModel:
        """'labels,num_samples' -> a threat model granting exactly those; 'all' or 'none' too."""
        items = grants.split(",") if isinstance(grants, str) else list(grants)
        items = [g.strip() for g in items if g.strip()]
        if items == ["all"]:
            return cls(True, True, True, True, True)
        if items == ["none"]:
            return cls(False, False, False, False, False)
        bad = [g for g in items if g not in GRANTABLE]
        if bad:
            raise FedleakInputError(f"unknown grant {bad[0]!r}; choose from {', '.join(GRANTABLE)}, all, none")
        return cls(**{g: g in items for g in GRANTABLE})
