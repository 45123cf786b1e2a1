"""Your own model wherever a model spec is accepted: ``path/to/file.py:factory`` or ``package.module:factory``
(a callable ``factory(in_shape, num_classes) -> nn.Module``; ``in_shape`` is one record's shape, e.g.
(3, 32, 32)), and in Python any ``nn.Module`` (no registration): :func:`live_spec` names it so that a
:class:`~fedleak.fl.ClientUpdate` of it can be rebuilt by the attacks in the same process.

    >>> import torch.nn as nn
    >>> spec = live_spec(nn.Linear(4, 2))
    >>> spec.startswith("module:"), type(build_user(spec, (4,), 2)).__name__
    (True, 'Linear')
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import re
import sys
from pathlib import Path

from torch import nn

from fedleak.errors import FedleakInputError

USER_SPEC = re.compile(r"^(?P<where>.+\.py|[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+):(?P<factory>[A-Za-z_]\w*)$")
LIVE_PREFIX = "module:"
_LIVE: dict[str, nn.Module] = {}  # spec -> a pristine copy of a module handed over in Python


def is_user_spec(spec: str) -> bool:
    return spec.startswith(LIVE_PREFIX) or USER_SPEC.match(spec) is not None


def live_spec(module: nn.Module) -> str:
    """A spec naming ``module`` (its architecture and its current weights as the initial state) in this process."""
    existing = getattr(module, "fedleak_spec", None)
    if isinstance(existing, str):
        return existing
    spec = f"{LIVE_PREFIX}{type(module).__name__}@{id(module):x}"
    _LIVE[spec] = copy.deepcopy(module).cpu()
    return spec


def _load_factory(where: str, factory: str, spec: str):  # noqa: ANN202
    if where.endswith(".py"):
        path = Path(where).expanduser()
        if not path.is_file():
            raise FedleakInputError(f"model {spec!r}: {path} does not exist; give path/to/file.py:factory")
        name = f"fedleak_user_model_{abs(hash(str(path.resolve()))):x}"
        module = sys.modules.get(name)
        if module is None:
            loader_spec = importlib.util.spec_from_file_location(name, path)
            if loader_spec is None or loader_spec.loader is None:
                raise FedleakInputError(f"model {spec!r}: {path} cannot be imported as Python")
            module = importlib.util.module_from_spec(loader_spec)
            try:
                loader_spec.loader.exec_module(module)
            except Exception as e:  # the user's file: any error is theirs to fix
                raise FedleakInputError(f"model {spec!r}: importing {path} failed ({type(e).__name__}: {e})") from None
            sys.modules[name] = module
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as e:
            raise FedleakInputError(f"model {spec!r}: cannot import {where} ({e}); check the module path") from None
    fn = getattr(module, factory, None)
    if not callable(fn):
        raise FedleakInputError(
            f"model {spec!r}: {where} has no factory {factory!r}; define def {factory}(in_shape, num_classes)"
        )
    return fn


def build_user(spec: str, in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The module a user spec names, for records of ``in_shape`` and ``num_classes`` classes."""
    if spec.startswith(LIVE_PREFIX):
        if spec not in _LIVE:
            raise FedleakInputError(
                f"model {spec!r} was handed over in another process; pass the module itself or a file.py:factory spec"
            )
        return copy.deepcopy(_LIVE[spec])
    m = USER_SPEC.match(spec)
    if m is None:
        raise FedleakInputError(f"model {spec!r}: write path/to/file.py:factory or package.module:factory")
    fn = _load_factory(m["where"], m["factory"], spec)
    try:
        model = fn(tuple(in_shape), int(num_classes))
    except Exception as e:
        raise FedleakInputError(
            f"model {spec!r}: {m['factory']}({tuple(in_shape)}, {num_classes}) failed ({type(e).__name__}: {e})"
        ) from None
    if not isinstance(model, nn.Module):
        raise FedleakInputError(f"model {spec!r}: the factory returned {type(model).__name__}, not a torch nn.Module")
    return model
