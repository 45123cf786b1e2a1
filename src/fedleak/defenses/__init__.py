"""Defenses: transforms of what a client sends or of how it trains, and what privacy they buy.

The one entry point is :func:`plan`: a list of ``--defense`` specs becomes a :class:`DefensePlan`, whose parts
are handed to ``fl`` as values (``fl`` imports no defense):

    >>> from fedleak.defenses import plan
    >>> p = plan([])                      # no defense: the honest client
    >>> p.transforms, p.trainer, p.aggregator, p.secagg
    ([], None, None, None)
    >>> p = plan(["prune:0.9", "secagg:4"])
    >>> p.transforms, p.secagg, p.label
    ([Prune(fraction=0.9, scope='layer')], 4, 'prune:0.9+secagg:4')

- ``transforms``: client-side update transforms ``(ClientUpdate, Generator) -> ClientUpdate`` (prune,
  quantize, noise, clip), passed as ``client_update(..., transforms=...)`` or
  ``Federation(..., transforms=...)``;
- ``trainer``: a :class:`fedleak.fl.LocalTrainer` replacing the client's SGD (DP-SGD), passed as ``trainer=``;
- ``aggregator``: replaces the server's weighted mean (client-level DP), ``Federation(..., aggregator=...)``;
- ``secagg``: K, when the server sees only the sum of K clients' updates (:func:`secure_sum`).

Specs (``fedleak defenses`` lists them; :data:`DEFENSES` is the registry):

- ``dp-sgd:noise=Z,clip=C`` or ``dp-sgd:epsilon=E,delta=D`` (noise chosen for the training length and sampling
  rate), optional ``accountant=rdp|prv``;
- ``client-dp:noise=Z,clip=C[,delta=D]``; ``prune:P[,scope=layer|global]``; ``quantize:BITS[,stochastic=1]``;
  ``noise:SIGMA``; ``clip:C``; ``secagg:K``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fedleak.defenses.clientdp import ClientDPAggregator
from fedleak.defenses.dpsgd import DPSGDTrainer, prepare_model
from fedleak.defenses.report import privacy_block
from fedleak.defenses.secagg import secure_groups, secure_sum
from fedleak.defenses.spec import DEFENSES, parse_defense
from fedleak.defenses.update import Clip, Noise, Prune, Quantize
from fedleak.errors import FedleakInputError


@dataclass
class DefensePlan:
    """The defenses of one run, as the values ``fl`` accepts, plus what they promise (:meth:`privacy`)."""

    specs: list[str] = field(default_factory=list)
    transforms: list[Any] = field(default_factory=list)
    trainer: Any | None = None
    aggregator: Any | None = None
    secagg: int | None = None
    notes: list[str] = field(default_factory=list)

    def prepare(self, model: Any) -> Any:
        """The model to train under this plan: with DP-SGD, BatchNorm becomes GroupNorm (Opacus refuses
        batch statistics); otherwise ``model`` itself."""
        if not isinstance(self.trainer, DPSGDTrainer):
            return model
        model, notes = prepare_model(model)
        for n in notes:
            if n not in self.notes:
                self.notes.append(n)
        return model

    def bind(self, *, rounds: int | None = None, clients: int | None = None) -> DefensePlan:
        """Tell the accounting what the training will be: a client's data may be trained on in up to
        ``rounds`` rounds (a DP-SGD target epsilon covers them all) and there are ``clients`` clients
        (client-level DP's sampling rate). Returns the plan."""
        if isinstance(self.trainer, DPSGDTrainer) and rounds:
            self.trainer.calls = int(rounds)
        if isinstance(self.aggregator, ClientDPAggregator) and clients:
            self.aggregator.population = int(clients)
        if isinstance(self.aggregator, ClientDPAggregator) and rounds:
            self.aggregator.planned_rounds = int(rounds)
        return self

    def privacy(self) -> dict[str, Any]:
        """What the configured defenses promise after the training that used them (e.g. epsilon at delta).

        Keys: ``epsilon`` (None without a DP defense), ``delta``, ``accountant``, ``epsilon_by_accountant``,
        ``noise_multiplier``, ``clip``, ``steps``, ``sample_rate``, ``level`` (sample or client),
        ``defenses``, ``notes``; with both DP-SGD and client-DP, the client-level block is under
        ``client_level``.
        """
        blocks = [b.privacy() for b in (self.trainer, self.aggregator) if b is not None and hasattr(b, "privacy")]
        if not blocks:
            out: dict[str, Any] = {"epsilon": None, "delta": None, "accountant": None, "level": None}
            extra = ["no differential-privacy defense: no formal guarantee"] if self.specs else []
        else:
            out, extra = dict(blocks[0]), []
            if len(blocks) > 1:
                out["client_level"] = blocks[1]
        out["defenses"] = self.label
        out["notes"] = list(dict.fromkeys([*out.get("notes", []), *self.notes, *extra]))
        return out

    @property
    def federation_options(self) -> dict[str, Any]:
        """The plan's parts as ``Federation(...)`` (and the Flower engine) take them as keywords."""
        return {"transforms": self.transforms, "trainer": self.trainer, "aggregator": self.aggregator}

    @property
    def label(self) -> str:
        return "+".join(self.specs) if self.specs else "none"


def plan(specs: list[str] | tuple[str, ...] | None) -> DefensePlan:
    """Parse ``--defense`` specs (repeatable) into one plan.

    >>> p = plan(["dp-sgd:noise=1.1,clip=1.0"])
    >>> type(p.trainer).__name__, p.trainer.noise, p.trainer.clip
    ('DPSGDTrainer', 1.1, 1.0)
    """
    specs = [s.strip() for s in (specs or []) if s and s.strip() and s.strip() != "none"]
    p = DefensePlan(specs=list(specs))
    for s in specs:
        name, args, kwargs = parse_defense(s)
        DEFENSES.get(name)(p, args, kwargs)
    if isinstance(p.trainer, DPSGDTrainer) and p.transforms:
        p.notes.append("update transforms after DP-SGD are post-processing: the DP guarantee is unchanged")
    return p


__all__ = [
    "DEFENSES",
    "ClientDPAggregator",
    "Clip",
    "DPSGDTrainer",
    "DefensePlan",
    "Noise",
    "Prune",
    "Quantize",
    "FedleakInputError",
    "plan",
    "prepare_model",
    "privacy_block",
    "secure_groups",
    "secure_sum",
]
