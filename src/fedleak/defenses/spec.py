"""``--defense`` specs: the registry of defense names, their parameters, and grid expansion for sweeps.

A builder takes the plan being assembled, the positional values and the ``key=value`` options of its spec.

    >>> parse_defense("dp-sgd:epsilon=8,delta=1e-5")
    ('dp-sgd', [], {'epsilon': '8', 'delta': '1e-5'})
    >>> expand_grid("prune:0.5,0.9,0.99")
    ['prune:0.5', 'prune:0.9', 'prune:0.99']
    >>> expand_grid("dp-sgd:epsilon=1,4,8,delta=1e-5")
    ['dp-sgd:epsilon=1,delta=1e-5', 'dp-sgd:epsilon=4,delta=1e-5', 'dp-sgd:epsilon=8,delta=1e-5']
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fedleak.errors import FedleakInputError, suggest
from fedleak.registry import Registry, parse_spec

if TYPE_CHECKING:
    from fedleak.defenses import DefensePlan

Builder = Callable[["DefensePlan", list[str], dict[str, str]], None]
DEFENSES: Registry[Builder] = Registry("defense")


def parse_defense(spec: str) -> tuple[str, list[str], dict[str, str]]:
    name, args, kwargs = parse_spec(spec)
    if not name:
        raise FedleakInputError(f"--defense {spec!r}: give a defense name, e.g. prune:0.9 or dp-sgd:epsilon=8")
    return name, args, kwargs


def _options(name: str, args: list[str], kwargs: dict[str, str], allowed: tuple[str, ...], positional: int) -> None:
    if len(args) > positional:
        raise FedleakInputError(
            f"--defense {name}: too many values {','.join(args)}; one spec takes one setting "
            "(grids like prune:0.5,0.9 are for `fedleak sweep`)"
        )
    for k in kwargs:
        if k not in allowed:
            raise FedleakInputError(
                f"--defense {name}: unknown option {k!r}{suggest(k, allowed)}; options are {', '.join(allowed)}"
            )


def _num(name: str, key: str, text: str | None, kind: type = float, default: Any = None) -> Any:
    if text is None:
        if default is None:
            raise FedleakInputError(f"--defense {name}: missing {key}")
        return default
    try:
        value = kind(float(text)) if kind is int and float(text).is_integer() else kind(text)
    except (ValueError, OverflowError):
        raise FedleakInputError(f"--defense {name}: {key}={text!r} is not a number") from None
    if not math.isfinite(value):
        raise FedleakInputError(f"--defense {name}: {key}={text!r} must be a finite number")
    if (
        key in ("noise", "clip", "epsilon", "delta", "sample_rate")
        and value <= 0
        and not (key == "noise" and value == 0)
    ):
        raise FedleakInputError(f"--defense {name}: {key}={text!r} must be positive")
    if key in ("delta", "sample_rate") and value >= 1:
        raise FedleakInputError(f"--defense {name}: {key}={text!r} must be below 1")
    return value


def _value(name: str, args: list[str], kwargs: dict[str, str], key: str, kind: type = float) -> Any:
    text = args[0] if args else kwargs.get(key)
    if text is None:
        raise FedleakInputError(f"--defense {name}: give a value, e.g. {name}:{'0.9' if kind is float else '8'}")
    return _num(name, key, text, kind)


def _only_one(plan: DefensePlan, attr: str, name: str) -> None:
    if getattr(plan, attr) is not None:
        raise FedleakInputError(f"--defense {name}: only one defense of this kind per run")


@DEFENSES.register("dp-sgd", "sample-level DP-SGD (Opacus): noise=Z,clip=C or epsilon=E,delta=D; accountant=rdp|prv")
def _dp_sgd(plan: DefensePlan, args: list[str], kwargs: dict[str, str]) -> None:
    from fedleak.defenses.dpsgd import DPSGDTrainer

    _options("dp-sgd", args, kwargs, ("noise", "clip", "epsilon", "delta", "accountant", "sample_rate"), 0)
    _only_one(plan, "trainer", "dp-sgd")
    plan.trainer = DPSGDTrainer(
        noise=_num("dp-sgd", "noise", kwargs["noise"]) if "noise" in kwargs else None,
        clip=_num("dp-sgd", "clip", kwargs.get("clip"), default=1.0),
        target_epsilon=_num("dp-sgd", "epsilon", kwargs["epsilon"]) if "epsilon" in kwargs else None,
        delta=_num("dp-sgd", "delta", kwargs.get("delta"), default=1e-5),
        accountant=kwargs.get("accountant", "rdp"),
        sample_rate=_num("dp-sgd", "sample_rate", kwargs["sample_rate"]) if "sample_rate" in kwargs else None,
    )


@DEFENSES.register(
    "client-dp", "client-level DP-FedAvg (clip each update, noise on the sum): noise=Z,clip=C or epsilon=E,delta=D"
)
def _client_dp(plan: DefensePlan, args: list[str], kwargs: dict[str, str]) -> None:
    from fedleak.defenses.clientdp import ClientDPAggregator

    _options("client-dp", args, kwargs, ("noise", "clip", "epsilon", "delta", "accountant"), 0)
    _only_one(plan, "aggregator", "client-dp")
    plan.aggregator = ClientDPAggregator(
        noise=_num("client-dp", "noise", kwargs["noise"]) if "noise" in kwargs else None,
        target_epsilon=_num("client-dp", "epsilon", kwargs["epsilon"]) if "epsilon" in kwargs else None,
        clip=_num("client-dp", "clip", kwargs.get("clip"), default=1.0),
        delta=_num("client-dp", "delta", kwargs.get("delta"), default=1e-5),
        accountant=kwargs.get("accountant", "rdp"),
    )


@DEFENSES.register("prune", "zero the fraction P of smallest-magnitude entries of each update tensor: prune:P")
def _prune(plan: DefensePlan, args: list[str], kwargs: dict[str, str]) -> None:
    from fedleak.defenses.update import Prune

    _options("prune", args, kwargs, ("fraction", "scope"), 1)
    p = _value("prune", args, kwargs, "fraction")
    scope = kwargs.get("scope", "layer")
    if not 0 <= p < 1 or scope not in ("layer", "global"):
        raise FedleakInputError(f"--defense prune:{p}: P must be in [0, 1) and scope layer or global")
    plan.transforms.append(Prune(p, scope))


@DEFENSES.register("quantize", "uniform quantization of each update tensor to BITS bits: quantize:BITS")
def _quantize(plan: DefensePlan, args: list[str], kwargs: dict[str, str]) -> None:
    from fedleak.defenses.update import Quantize

    _options("quantize", args, kwargs, ("bits", "stochastic"), 1)
    bits = _value("quantize", args, kwargs, "bits", int)
    if not 1 <= bits <= 32:
        raise FedleakInputError(f"--defense quantize:{bits}: BITS must be between 1 and 32")
    plan.transforms.append(Quantize(bits, kwargs.get("stochastic", "0") not in ("0", "false", "no")))


@DEFENSES.register("noise", "Gaussian noise of std SIGMA on every update entry (no accounting): noise:SIGMA")
def _noise(plan: DefensePlan, args: list[str], kwargs: dict[str, str]) -> None:
    from fedleak.defenses.update import Noise

    _options("noise", args, kwargs, ("sigma",), 1)
    s = _value("noise", args, kwargs, "sigma")
    if s < 0:
        raise FedleakInputError(f"--defense noise:{s}: SIGMA must be >= 0")
    plan.transforms.append(Noise(s))


@DEFENSES.register("clip", "scale each update to L2 norm at most C (no noise): clip:C")
def _clip(plan: DefensePlan, args: list[str], kwargs: dict[str, str]) -> None:
    from fedleak.defenses.update import Clip

    _options("clip", args, kwargs, ("clip",), 1)
    c = _value("clip", args, kwargs, "clip")
    if c <= 0:
        raise FedleakInputError(f"--defense clip:{c}: C must be > 0")
    plan.transforms.append(Clip(c))


@DEFENSES.register("secagg", "secure aggregation: the server sees only the sum of K clients' updates: secagg:K")
def _secagg(plan: DefensePlan, args: list[str], kwargs: dict[str, str]) -> None:
    _options("secagg", args, kwargs, ("k",), 1)
    _only_one(plan, "secagg", "secagg")
    k = _value("secagg", args, kwargs, "k", int)
    if k < 1:
        raise FedleakInputError(f"--defense secagg:{k}: K must be at least 1")
    plan.secagg = k


def expand_grid(spec: str) -> list[str]:
    """A sweep's grid spec -> one defense spec per grid point.

    Bare values after ``name:`` are alternatives for the defense's one setting (``prune:0.5,0.9``); bare
    values after ``key=v`` are alternatives for that key (``dp-sgd:epsilon=1,4,8,delta=1e-5``); several keys
    with several values give their product. ``none`` stays the undefended run.
    """
    spec = spec.strip()
    name, _, rest = spec.partition(":")
    if not rest:
        return [spec]
    keys: list[str | None] = []
    values: dict[str | None, list[str]] = {}
    current: str | None = None
    for tok in (t.strip() for t in rest.split(",")):
        if not tok:
            continue
        if "=" in tok:
            current, _, v = tok.partition("=")
            current = current.strip()
            tok = v.strip()
        if current not in values:
            keys.append(current)
            values[current] = []
        values[current].append(tok)
    out = []
    for combo in itertools.product(*(values[k] for k in keys)):
        parts = [v if k is None else f"{k}={v}" for k, v in zip(keys, combo, strict=True)]
        out.append(f"{name}:{','.join(parts)}")
    return out
