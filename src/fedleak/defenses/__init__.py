"""Defenses: transforms of what a client sends or of how it trains, and what privacy they buy.

The one entry point is :func:`plan`: a list of ``--defense`` specs becomes a :class:`DefensePlan`, whose parts
are handed to ``fl`` as values (``fl`` imports no defense):

    >>> from fedleak.defenses import plan
    >>> p = plan([])                      # no defense: the honest client
    >>> p.transforms, p.trainer, p.aggregator, p.secagg
    ([], None, None, None)

- ``transforms``: client-side update transforms ``(ClientUpdate, Generator) -> ClientUpdate`` (prune, quantize,
  noise, clip), passed as ``client_update(..., transforms=...)`` / ``Federation(..., transforms=...)``;
- ``trainer``: a :class:`fedleak.fl.LocalTrainer` replacing the client's SGD (DP-SGD), passed as ``trainer=``;
- ``aggregator``: replaces the server's weighted mean (client-level DP), ``Federation(..., aggregator=...)``;
- ``secagg``: K, when the server sees only the sum of K clients' updates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fedleak.errors import FedleakInputError


@dataclass
class DefensePlan:
    specs: list[str] = field(default_factory=list)
    transforms: list[Any] = field(default_factory=list)
    trainer: Any | None = None
    aggregator: Any | None = None
    secagg: int | None = None

    def privacy(self) -> dict[str, Any]:
        """What the configured defenses promise after the training that used them (e.g. epsilon at delta)."""
        return {}

    @property
    def label(self) -> str:
        return "+".join(self.specs) if self.specs else "none"


def plan(specs: list[str] | tuple[str, ...] | None) -> DefensePlan:
    """Parse ``--defense`` specs (repeatable) into one plan."""
    specs = [s for s in (specs or []) if s and s.strip() and s.strip() != "none"]
    if specs:
        raise FedleakInputError(f"defense {specs[0]!r}: defenses are not available in this version")
    return DefensePlan()
