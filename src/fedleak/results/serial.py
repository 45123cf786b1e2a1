"""Dataclasses to and from plain JSON values, by their type hints (nested records, lists, dicts, optionals,
literals). Keys a record does not declare are ignored on reading (a newer writer may add some); a value of the
wrong kind for a declared field is an error that names the field."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from fedleak.errors import FedleakInputError

T = TypeVar("T")


class Record:
    """Mixin for result records: ``to_dict()`` and ``from_dict()``."""

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    @classmethod
    def from_dict(cls: type[T], data: Any) -> T:
        return from_dict(cls, data)

    def replace(self: T, **changes: Any) -> T:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


def to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj


def from_dict(cls: type[T], data: Any, where: str = "") -> T:
    where = where or cls.__name__
    if not isinstance(data, dict):
        raise FedleakInputError(f"results: {where} should be an object, found {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in data:
            kwargs[f.name] = _convert(hints[f.name], data[f.name], f"{where}.{f.name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise FedleakInputError(f"results: {where} lacks {f.name!r}")
    return cls(**kwargs)


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            return None
        if len(args) == 1:
            return _convert(args[0], value, where)
        for a in args:  # the first that fits
            try:
                return _convert(a, value, where)
            except FedleakInputError:
                continue
        raise FedleakInputError(f"results: {where} = {value!r} fits none of {args}")
    if origin is Literal:
        if value not in get_args(tp):
            raise FedleakInputError(f"results: {where} = {value!r}, expected one of {get_args(tp)}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise FedleakInputError(f"results: {where} should be a list")
        (a,) = get_args(tp) or (Any,)
        return [_convert(a, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise FedleakInputError(f"results: {where} should be an object")
        _, a = get_args(tp) or (str, Any)
        return {k: _convert(a, v, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise FedleakInputError(f"results: {where} should be a number, found {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise FedleakInputError(f"results: {where} should be an integer, found {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise FedleakInputError(f"results: {where} should be true or false, found {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise FedleakInputError(f"results: {where} should be a string, found {value!r}")
        return value
    return value
