"""fedleak inside Flower: a curious server in any Flower app, fedleak's federation on Flower's engine, and
reference models trained as Ray tasks. Flower is an optional extra (``pip install 'fedleak[flower]'``); this
package imports without it, and the names that need it load it on first use.

- :class:`AuditingStrategy` (Message API, ``aggregate_train``) and :class:`LegacyAuditingStrategy`
  (``aggregate_fit``, the path of Flower's SecAgg+): wrap the user's strategy; each client reply becomes a
  :class:`~fedleak.fl.ClientUpdate` view, attacks run on it, :class:`Finding` records collect.
- :func:`run_flower_federation`: ``fedleak.fl.Federation``'s setup as Flower ClientApps/ServerApp on the
  simulation engine (``audit`` calls it for ``engine = "flower"``).
- :data:`leakage_guard` / :class:`LeakageGuard`: a client mod that checks the received model for malicious
  constructions and the client's own update for exact exposure before it is sent (warn, clip or refuse).
- :func:`write_flower_run`: an audited run as a fedleak run folder (results.json, report.html).
- :func:`train_references_on_ray`: membership-inference reference models, K split in chunks, one Ray task
  each.
- :class:`CanaryClients` / :func:`run_flower_canaries`: Flower's DP wrappers audited with canary clients in a
  Flower simulation (``fedleak audit-dp --flower server|client``).

    >>> import fedleak.flower
    >>> sorted(n for n in fedleak.flower.__all__ if "Strategy" in n)
    ['AuditingStrategy', 'LegacyAuditingStrategy']
"""

from __future__ import annotations

import importlib
from typing import Any

from fedleak.flower.auditor import Auditor, Finding, Reply, resolve_attacks
from fedleak.flower.views import WireKeys, build_update

_LAZY = {
    "AuditingStrategy": "fedleak.flower.strategy",
    "LegacyAuditingStrategy": "fedleak.flower.legacy",
    "run_flower_federation": "fedleak.flower.federation",
    "FlowerRun": "fedleak.flower.federation",
    "FlowerDP": "fedleak.flower.federation",
    "RayOptions": "fedleak.flower.federation",
    "ClientTask": "fedleak.flower.apps",
    "message_client_app": "fedleak.flower.apps",
    "legacy_client_app": "fedleak.flower.apps",
    "train_references_on_ray": "fedleak.flower.ray_backend",
    "leakage_guard": "fedleak.flower.guard",
    "LeakageGuard": "fedleak.flower.guard",
    "write_flower_run": "fedleak.flower.runfolder",
    "ray_reference_trainer": "fedleak.flower.ray_backend",
    "CanaryClients": "fedleak.flower.dp_audit",
    "run_flower_canaries": "fedleak.flower.dp_audit",
}

__all__ = ["Auditor", "Finding", "Reply", "WireKeys", "build_update", "resolve_attacks", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        try:
            module = importlib.import_module(_LAZY[name])
        except ImportError as e:
            from fedleak.errors import FedleakInputError

            raise FedleakInputError(
                f"fedleak.flower.{name} needs Flower/Ray ({e.name} is missing): pip install 'fedleak[flower]'"
            ) from None
        return getattr(module, name)
    raise AttributeError(f"module 'fedleak.flower' has no attribute {name!r}")
