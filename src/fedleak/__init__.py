"""fedleak: measure what federated learning leaks.

Submodules load lazily so that ``import fedleak`` stays cheap (torch is imported on first use)::

    import fedleak
    data = fedleak.data.load("digits")
    model = fedleak.models.build("mlp", data.spec, seed=0)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = {"data", "models", "fl", "metrics", "attacks", "defenses", "audit", "report", "flower"}

__all__ = sorted(_SUBMODULES) + ["FedleakInputError", "__version__"]

from fedleak.errors import FedleakInputError  # noqa: E402


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        module = importlib.import_module(f"fedleak.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'fedleak' has no attribute {name!r}")
