"""The scenario builder: for one defense (or none), every federation the audit trains — data split, federation
config, defense plan, threat model, and the :class:`~fedleak.results.FederationInfo` that figures measured on
it name — built once and handed to the stages (no stage loads a dataset or reads federation settings itself).

An audit has one federation (``[federation]``), or two when ``[membership]`` names its own dataset: then
membership runs on a federation of that dataset and its figures speak of that federation, never of the first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fedleak.audit.config import AuditConfig
from fedleak.audit.train import train_test_split
from fedleak.data import Dataset, load
from fedleak.defenses import plan as defense_plan
from fedleak.fl import FedConfig, Federation, ThreatModel
from fedleak.models import build
from fedleak.results import FederationInfo


@dataclass
class FederationSetup:
    """One federation of one scenario, built once."""

    key: str  # "main" or "membership": the stage and file names use it
    info: FederationInfo
    data: Dataset
    train: Dataset
    test: Dataset
    config: FedConfig
    plan: Any  # fedleak.defenses.DefensePlan, bound to this federation's rounds and clients
    threat: ThreatModel
    model_spec: str
    device: str
    seed: int
    weights: str | None = None  # the initial global model's weights, when the config names a file

    def federation(self) -> Federation:
        """A fresh federation (the initial global model) of this setup, for the training stage."""
        model = build(self.model_spec, self.data.spec, seed=self.seed, device=self.device, weights=self.weights)
        model = self.plan.prepare(model)
        return Federation(model, self.train, self.test, self.config, **self.plan.federation_options)

    def model(self):  # noqa: ANN201
        """The architecture (weights to be loaded from a checkpoint), as the defense prepares it."""
        return self.plan.prepare(build(self.model_spec, self.data.spec, seed=self.seed, device=self.device))


@dataclass
class ScenarioSetup:
    defense: str
    main: FederationSetup
    membership: FederationSetup  # the main federation itself when [membership] names no dataset of its own

    @property
    def separate_membership(self) -> bool:
        return self.membership is not self.main


def federation_infos(config: AuditConfig) -> tuple[FederationInfo, FederationInfo | None]:
    """The federations the config describes (the second only when membership has its own dataset)."""
    fed, m = config.federation, config.membership
    main = FederationInfo(
        name=f"the {fed.dataset} federation",
        dataset=fed.dataset,
        model=fed.model,
        clients=fed.clients,
        rounds=fed.rounds,
        mode=fed.mode,
        local_epochs=fed.local_epochs,
        batch_size=fed.batch_size,
        lr=fed.lr,
        partition=fed.partition,
    )
    if not (m.enabled and m.dataset is not None):
        return main, None
    name = f"the {m.dataset} federation"
    if m.dataset == fed.dataset:
        name = f"the membership federation ({m.dataset})"
    second = FederationInfo(
        name=name,
        dataset=m.dataset,
        model=m.model or fed.model,
        clients=m.clients or fed.clients,
        rounds=m.rounds or fed.rounds,
        mode=fed.mode,
        local_epochs=m.local_epochs or fed.local_epochs,
        batch_size=m.batch_size or fed.batch_size,
        lr=m.lr or fed.lr,
        partition="iid",
    )
    return main, second


def _setup(config: AuditConfig, defense: str, info: FederationInfo, key: str, test_fraction: float, samples: int):
    data = load(info.dataset)
    train, test = train_test_split(data, test_fraction, samples, config.seed)
    fcfg = FedConfig(
        clients=info.clients,
        rounds=info.rounds,
        fraction=config.federation.fraction,
        mode=info.mode,  # type: ignore[arg-type]
        local_epochs=info.local_epochs,
        batch_size=info.batch_size,
        lr=info.lr,
        partition=info.partition,
        seed=config.seed,
    )
    p = defense_plan([] if defense == "none" else [defense]).bind(rounds=fcfg.rounds, clients=fcfg.clients)
    return FederationSetup(
        key=key,
        info=info,
        data=data,
        train=train,
        test=test,
        config=fcfg,
        plan=p,
        threat=ThreatModel.from_grants(config.threat.grants),
        model_spec=info.model,
        device=config.device,
        seed=config.seed,
        weights=config.federation.weights if key == "main" else None,
    )


def build_scenario(config: AuditConfig, defense: str) -> ScenarioSetup:
    """Every federation of the scenario ``defense`` ('none' for the undefended setup)."""
    fed, m = config.federation, config.membership
    main_info, mia_info = federation_infos(config)
    main = _setup(config, defense, main_info, "main", fed.test_fraction, fed.samples)
    if mia_info is None:
        return ScenarioSetup(defense, main, main)
    second = _setup(config, defense, mia_info, "membership", m.test_fraction or fed.test_fraction, 0)
    return ScenarioSetup(defense, main, second)
