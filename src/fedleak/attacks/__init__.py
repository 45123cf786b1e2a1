"""Attacks on what a federated server sees: gradient inversion (:mod:`fedleak.attacks.inversion`) and
membership inference (:mod:`fedleak.attacks.membership`, loaded on first use).

    >>> import fedleak
    >>> data = fedleak.data.load("digits")
    >>> model = fedleak.models.build("mlp", data.spec, seed=0)
    >>> rec = fedleak.attacks.invert(fedleak.fl.client_update(model, data.subset([3])), attack="analytic")
    >>> rec.pixels.shape
    torch.Size([1, 1, 8, 8])
"""

from __future__ import annotations

import importlib
from typing import Any

from fedleak.attacks.inversion import ATTACKS, Reconstruction, invert, invert_batch

__all__ = ["ATTACKS", "Reconstruction", "invert", "invert_batch", "membership_scores"]


def __getattr__(name: str) -> Any:
    if name == "membership_scores":
        return importlib.import_module("fedleak.attacks.membership").membership_scores
    if name == "membership":
        return importlib.import_module("fedleak.attacks.membership")
    raise AttributeError(f"module 'fedleak.attacks' has no attribute {name!r}")
