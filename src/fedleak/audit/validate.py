"""Whole-config validation before any work starts or any file is written."""

from __future__ import annotations

from fedleak.audit.config import AuditConfig
from fedleak.errors import FedleakInputError


def validate_config(config: AuditConfig) -> None:
    """Check everything a person can get wrong before any work starts or any file is written."""
    from fedleak.attacks.inversion import ATTACKS as INV
    from fedleak.data import load
    from fedleak.defenses import plan
    from fedleak.fl import ThreatModel
    from fedleak.models import build

    fed = config.federation
    data = load(fed.dataset)
    build(fed.model, data.spec, seed=config.seed)
    ThreatModel.from_grants(config.threat.grants)
    for d in config.defenses:
        plan([d])
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
        mdata = load(m.dataset) if m.dataset else data
        build(m.model or fed.model, mdata.spec, seed=config.seed)
        if m.client >= (m.clients or fed.clients):
            raise FedleakInputError(f"membership.client {m.client}: clients are numbered from 0")
    if config.engine == "flower":
        try:
            import fedleak.flower  # noqa: F401
        except ImportError as e:
            raise FedleakInputError(f"engine = 'flower' needs Flower: pip install 'fedleak[flower]' ({e})") from None
