"""Whole-config validation: every section checked (data loaded and split, models built, defenses bound to the
federation they will run in, partitions drawn, the device resolved, the text case's dataset and model) before
any work starts or any file is written."""

from __future__ import annotations

from fedleak.audit.config import AuditConfig
from fedleak.errors import FedleakInputError


def validate_config(config: AuditConfig) -> None:
    """Raise FedleakInputError (one line: what and how to fix it) for anything a person can get wrong."""
    from fedleak.attacks.inversion import ATTACKS as INV
    from fedleak.audit.scenario import build_scenario
    from fedleak.data import load
    from fedleak.data.partition import partition
    from fedleak.defenses import plan as plan_of
    from fedleak.device import resolve_device
    from fedleak.fl import ThreatModel
    from fedleak.models import build

    try:
        resolve_device(config.device)
    except FedleakInputError:
        raise
    except Exception as e:  # torch's RuntimeError for an unknown or absent device
        raise FedleakInputError(f"device {config.device!r}: {e}; use cpu, cuda, cuda:N or auto") from None
    fed = config.federation
    ThreatModel.from_grants(config.threat.grants)
    setups = [build_scenario(config, d) for d in ["none", *config.defenses]]  # data, splits, defenses
    for setup in setups:
        for fs in {id(s): s for s in (setup.main, setup.membership)}.values():
            build(fs.model_spec, fs.data.spec, seed=config.seed, weights=fs.weights)
            parts = partition(fs.train.labels, fs.config.partition, fs.config.clients, config.seed)
            k = int(fs.plan.secagg or 1)
            if k > fs.config.clients:
                raise FedleakInputError(
                    f"defense secagg:{k}: the federation of {fs.info.dataset} has only {fs.config.clients} clients; "
                    f"use secagg:{fs.config.clients} or fewer"
                )
            smallest = min(len(p) for p in parts)
            if fs is setup.main and config.inversion.enabled and config.inversion.probe_batch_size > smallest:
                raise FedleakInputError(
                    f"inversion.probe_batch_size {config.inversion.probe_batch_size}: the smallest client of "
                    f"{fs.info.dataset} holds {smallest} records; use at most that"
                )
    if config.inversion.enabled:
        for a in [*config.inversion.attacks, *config.inversion.probe_attacks]:
            if a != "auto":
                INV.get(a)
        bad_rounds = [r for r in config.inversion.rounds if not 1 <= r <= fed.rounds]
        if bad_rounds:
            raise FedleakInputError(f"inversion.rounds {bad_rounds}: rounds run from 1 to {fed.rounds}")
        bad_clients = [c for c in config.inversion.clients if not 0 <= c < fed.clients]
        if bad_clients:
            raise FedleakInputError(f"inversion.clients {bad_clients}: clients are numbered 0 to {fed.clients - 1}")
    if config.membership.enabled:
        from fedleak.attacks.membership import ATTACKS as MIA

        for a in config.membership.attacks:
            MIA.get(a)
        m = config.membership
        if m.client >= (m.clients or fed.clients):
            raise FedleakInputError(
                f"membership.client {m.client}: clients are numbered 0 to {(m.clients or fed.clients) - 1}"
            )
    if config.text.enabled:
        from fedleak.attacks.inversion.text import TEXT_ATTACKS

        t = config.text
        data = load(t.dataset)
        if data.spec.modality != "text":
            kind = data.spec.modality
            raise FedleakInputError(f"text.dataset {t.dataset!r} holds {kind} records; give a text dataset")
        if t.attack != "auto":
            TEXT_ATTACKS.get(t.attack)
        build(t.model, data.spec, seed=config.seed)
        if t.num_records > len(data):
            raise FedleakInputError(f"text.num_records {t.num_records}: {t.dataset} has {len(data)} records")
    if config.audit_dp.enabled:
        a = config.audit_dp
        dp = plan_of([a.defense])
        kind = "client" if dp.aggregator is not None else "gradient"
        if dp.aggregator is None and dp.trainer is None:
            raise FedleakInputError(f"audit_dp.defense {a.defense!r}: give a DP defense (dp-sgd:... or client-dp:...)")
        if (a.canaries == "client") != (kind == "client"):
            raise FedleakInputError(
                f"audit_dp.canaries {a.canaries!r} does not fit {a.defense!r}: client canaries audit client-dp, "
                "gradient and record canaries audit dp-sgd"
            )
        if a.flower is not None:
            if a.canaries != "client":
                raise FedleakInputError(
                    f"audit_dp.flower = {a.flower!r} audits Flower's client-level DP wrappers: set canaries = 'client' "
                    "and a client-dp defense"
                )
            try:
                import fedleak.flower  # noqa: F401
            except ImportError as e:
                raise FedleakInputError(f"audit_dp.flower needs Flower: pip install 'fedleak[flower]' ({e})") from None
        d = load(a.dataset) if a.dataset else None
        if d is not None:
            build(a.model or fed.model, d.spec, seed=config.seed)
    if config.engine == "flower":
        try:
            import fedleak.flower  # noqa: F401
        except ImportError as e:
            raise FedleakInputError(f"engine = 'flower' needs Flower: pip install 'fedleak[flower]' ({e})") from None
