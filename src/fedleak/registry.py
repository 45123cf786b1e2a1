"""Name -> factory registries (datasets, models, attacks, defenses), instead of if/elif chains.

>>> from fedleak.registry import Registry
>>> shapes = Registry("shape")
>>> @shapes.register("square")
... def square(side: float) -> float:
...     return side * side
>>> shapes.get("square")(3)
9
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from fedleak.errors import FedleakInputError, suggest

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._help: dict[str, str] = {}

    def register(self, name: str, help: str = "") -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            self._help[name] = help or (getattr(obj, "__doc__", "") or "").strip().split("\n")[0]
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise FedleakInputError(
                f"unknown {self.kind} {name!r}{suggest(name, self._items)}; "
                f"choose one of: {', '.join(sorted(self._items))}"
            ) from None

    def help(self, name: str) -> str:
        return self._help.get(name, "")

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def parse_spec(spec: str) -> tuple[str, list[str], dict[str, str]]:
    """Split 'name:a,b,key=value' into ('name', ['a', 'b'], {'key': 'value'})."""
    name, _, rest = spec.strip().partition(":")
    args: list[str] = []
    kwargs: dict[str, str] = {}
    for part in (p.strip() for p in rest.split(",")) if rest else ():
        if not part:
            continue
        if "=" in part:
            k, _, v = part.partition("=")
            kwargs[k.strip()] = v.strip()
        else:
            args.append(part)
    return name.strip(), args, kwargs
