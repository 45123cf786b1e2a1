"""Gradient inversion: rebuild a client's records from the update the server received.

Every attack is a name in :data:`ATTACKS` mapping to a factory ``(**options) -> attack``; an attack's
``run(updates)`` returns one :class:`Reconstruction` per :class:`~fedleak.fl.ClientUpdate`, attacking the
independent updates together as one batched computation where it optimises.

    >>> import fedleak
    >>> data = fedleak.data.load("digits")
    >>> model = fedleak.models.build("mlp", data.spec, seed=0)
    >>> rec = invert(fedleak.fl.client_update(model, data.subset([3])), attack="analytic")
    >>> float(fedleak.metrics.psnr(rec.pixels, data.pixels([3]))[0]) > 100
    True
    >>> ATTACKS.names()
    ['analytic', 'dlg', 'fedavg', 'idlg', 'ig', 'imprint', 'spear']

Register your own with ``@ATTACKS.register("name", "one line of help")`` on a factory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any, Protocol

from fedleak.attacks.inversion.analytic import linear_leak
from fedleak.attacks.inversion.imprint import IMPRINT_KEY, imprint_leak, imprint_model, with_plan
from fedleak.attacks.inversion.optimize import PRESETS, GradientMatching, MatchConfig, make_config
from fedleak.attacks.inversion.record import Reconstruction
from fedleak.attacks.inversion.spear import spear_leak
from fedleak.errors import FedleakInputError
from fedleak.fl.update import ClientUpdate
from fedleak.registry import Registry


class Attack(Protocol):
    name: str

    def run(self, updates: Sequence[ClientUpdate]) -> list[Reconstruction]: ...


ATTACKS: Registry[Callable[..., Attack]] = Registry("inversion attack")

_HELP = {
    "dlg": "DLG: squared-L2 gradient match, L-BFGS, dummy image and soft label jointly (Zhu et al. 2019)",
    "idlg": "iDLG: DLG with the label read from the last layer's gradient (Zhao et al. 2020)",
    "ig": "Inverting Gradients: cosine distance + TV, signed Adam, box constraint, restarts (Geiping et al.)",
    "fedavg": "Inverting Gradients on a FedAvg update: replay S local SGD steps and match w1 - w0",
}


def _preset(name: str) -> None:
    def factory(**options: Any) -> GradientMatching:
        given = [k for k, v in options.items() if v is not None]
        return GradientMatching(name, make_config(name, **options), given)

    factory.__doc__ = _HELP[name]
    ATTACKS.register(name, _HELP[name])(factory)


for _name in PRESETS:
    _preset(_name)

_OPTIMISATION_OPTIONS = {f.name for f in fields(MatchConfig)}


class PerUpdate:
    """An analytic attack: one exact read-out per update (optimisation options are accepted and ignored)."""

    def __init__(self, name: str, fn: Callable[[ClientUpdate], Reconstruction], **options: Any) -> None:
        bad = sorted(set(options) - _OPTIMISATION_OPTIONS)
        if bad:
            raise FedleakInputError(f"attack {name!r} has no option {bad[0]!r}")
        self.name, self.fn = name, fn

    def run(self, updates: Sequence[ClientUpdate]) -> list[Reconstruction]:
        return [self.fn(u) for u in updates]


@ATTACKS.register("analytic", "Phong et al.: a fully connected first layer with bias leaks its input exactly")
def _analytic(**options: Any) -> PerUpdate:
    return PerUpdate("analytic", linear_leak, **options)


@ATTACKS.register("spear", "SPEAR-style: a batch read exactly off a ReLU first layer's low-rank, sparse gradient")
def _spear(**options: Any) -> PerUpdate:
    seed = int(options.get("seed", 0))
    draws = options.pop("max_draws", None)  # spear's budget of unit subsets (None: spear.MAX_DRAWS)
    budget = {} if draws is None else {"max_draws": int(draws)}
    return PerUpdate("spear", lambda u: spear_leak(u, seed=seed, **budget), **options)


@ATTACKS.register("imprint", "Robbing the Fed: a malicious server's imprint block returns images exactly")
def _imprint(**options: Any) -> PerUpdate:
    return PerUpdate("imprint", imprint_leak, **options)


def _first_linear_reason(update: ClientUpdate, attack: str) -> str | None:
    import math

    from fedleak.attacks.inversion.analytic import first_linear

    if update.data_spec is None:
        return f"{attack} needs the data format of the update"
    try:
        first_linear(update.payload, math.prod(update.data_spec.shape))
    except FedleakInputError:
        return f"{attack} needs a fully connected first layer with a bias; this model has none"
    return None


def why_not(attack: str, update: ClientUpdate) -> str | None:
    """None when ``attack`` fits ``update`` (its kind, the metadata granted, the architecture), else one line
    saying why not. What each attack needs, as data the audit and the Flower wrapper choose attacks by."""
    if attack not in ATTACKS:
        return f"{attack!r} is not an inversion attack ({', '.join(ATTACKS.names())})"
    gradient_only = ("analytic", "spear", "dlg", "idlg", "ig")
    if attack in gradient_only and update.kind != "gradient":
        steps = f" over {update.local_steps} local steps" if update.local_steps else ""
        return f"{attack} reads one gradient; this client sent a FedAvg model delta{steps}"
    if attack == "fedavg":
        if update.kind != "delta":
            return "fedavg replays local training; this client sent a single gradient (FedSGD)"
        missing = [n for n in ("local_steps", "local_lr") if getattr(update, n) is None]
        if missing:
            return f"fedavg needs {', '.join(missing)}, which this threat model does not grant"
    if attack == "imprint" and IMPRINT_KEY not in update.extras:
        return "imprint needs a malicious server that planted an imprint block in the global model"
    if attack in ("analytic", "spear"):
        reason = _first_linear_reason(update, attack)
        if reason:
            return reason
    if attack == "analytic" and (update.num_samples or 1) > 1:
        return f"analytic reads one record exactly; this update holds {update.num_samples} (use spear for batches)"
    if attack == "spear":
        import math

        from fedleak.attacks.inversion.analytic import first_linear
        from fedleak.attacks.inversion.spear import followed_by_relu

        w, _ = first_linear(update.payload, math.prod(update.data_spec.shape))
        if followed_by_relu(update, w) is not True:
            return "spear needs a ReLU after the first linear layer; this model has another activation"
    return None


EXACT_ATTACKS = ("analytic", "spear")  # exact read-outs: tried first wherever they apply
OPTIMISATION_ORDER = {"gradient": ("idlg", "ig", "dlg"), "delta": ("fedavg",)}


def auto_attacks(update: ClientUpdate) -> list[str]:
    """What "auto" runs on ``update`` (the audit and the Flower wrapper alike): every exact attack that fits,
    then the first optimisation attack that fits its kind (FedAvg deltas: the FedAvg replay)."""
    exact = [a for a in EXACT_ATTACKS if a in ATTACKS and why_not(a, update) is None]
    order = OPTIMISATION_ORDER.get(update.kind, ())
    return exact + [a for a in order if a in ATTACKS and why_not(a, update) is None][:1]


def applicable(update: ClientUpdate) -> dict[str, str | None]:
    """Every registered attack -> None if it fits ``update``, else why not (one line)."""
    return {name: why_not(name, update) for name in ATTACKS.names()}


def invert_batch(updates: Sequence[ClientUpdate], attack: str = "ig", **options: Any) -> list[Reconstruction]:
    """Attack several independent updates at once (one batched computation for the optimisation attacks)."""
    return ATTACKS.get(attack)(**options).run(list(updates))


def invert(update: ClientUpdate, attack: str = "ig", **options: Any) -> Reconstruction:
    """Rebuild the records behind one update with the named attack (options as in :class:`MatchConfig`:
    ``iterations``, ``restarts``, ``seed``, ``lr``, ``tv``, ``dtype``, ``device`` ...)."""
    return invert_batch([update], attack, **options)[0]


__all__ = [
    "ATTACKS",
    "PRESETS",
    "Attack",
    "GradientMatching",
    "MatchConfig",
    "Reconstruction",
    "applicable",
    "auto_attacks",
    "imprint_model",
    "invert",
    "invert_batch",
    "make_config",
    "why_not",
    "with_plan",
]
