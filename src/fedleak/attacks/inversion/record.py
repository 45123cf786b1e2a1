"""The plain record every inversion attack returns."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class Reconstruction:
    """What an attack rebuilt from one :class:`~fedleak.fl.ClientUpdate`.

    ``inputs`` are in the model's input space (normalised), ``pixels`` the same images in [0, 1] (for images);
    ``labels`` the recovered labels (one per reconstruction); ``objective`` the attack's own final objective
    per restart (lower is better; the best restart is chosen by it, never by comparing with the data);
    ``seconds`` the attack's wall time for this update (a batched run's time divided by its updates).
    """

    attack: str
    inputs: Tensor
    pixels: Tensor
    labels: Tensor | None
    objective: Tensor
    best_restart: int = 0
    seconds: float = 0.0
    label_method: str = "none"
    extras: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.inputs)


__all__ = ["Reconstruction"]
