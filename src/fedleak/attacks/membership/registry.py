"""The membership attacks by name: each is ``fn(context, **options) -> scores`` (one per record, higher =
more likely a member). Add your own with ``@ATTACKS.register("name")`` on an :class:`AttackEntry`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from fedleak.registry import Registry


@dataclass(frozen=True)
class AttackEntry:
    fn: Callable[..., Tensor]
    references: str | None = None  # None, "online", "offline" or "shadow": which models it trains
    access: str = "black-box"


ATTACKS: Registry[AttackEntry] = Registry("membership attack")


def attack(name: str, help: str, references: str | None = None) -> Callable:
    """Register ``fn(ctx, **options) -> Tensor`` as a membership attack."""

    def deco(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        ATTACKS.register(name, help)(AttackEntry(fn, references))
        return fn

    return deco
