"""Attacks after the run: the views an audited Flower run saved (``RUN_DIR/views/*.safetensors``, written with
``attack_in="later"`` or any disk-kept audit) attacked now, and the run folder (re)written. Behind ``fedleak
audit-flower RUN_DIR``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedleak.errors import FedleakInputError
from fedleak.fl.update import ClientUpdate
from fedleak.flower.auditor import Auditor
from fedleak.flower.runfolder import RecordsOf, previous_run, write_flower_run
from fedleak.flower.viewstore import load_view
from fedleak.models.user import _LIVE, LIVE_PREFIX, USER_SPEC, _load_factory
from fedleak.results import AuditResults


def _records_of(spec: str | None) -> RecordsOf | None:
    if spec is None:
        return None
    m = USER_SPEC.match(spec)
    if m is None:
        raise FedleakInputError(f"--records-of {spec!r}: write path/to/file.py:function or package.module:function")
    return _load_factory(m["where"], m["factory"], spec)


def _attack_list(attacks: list[str], iterations: int, seed: int) -> list[Any]:
    opts: dict[str, Any] = {"seed": seed}
    if iterations > 0:
        opts["iterations"] = iterations
    return [(a, dict(opts)) for a in attacks]


def audit_saved_views(
    run_dir: str | Path,
    *,
    attacks: list[str] | None = None,
    model: str | None = None,
    records_of: str | RecordsOf | None = None,
    iterations: int = 0,
    seed: int = 0,
) -> AuditResults:
    """Attack every saved view of ``run_dir`` and rewrite its results.json (the audit's schema) and report.html;
    what only the run knew (test accuracy and wall time per round, the app's facts) is kept from the
    results.json the run wrote."""
    run_dir = Path(run_dir)
    files = sorted((run_dir / "views").glob("*.safetensors"))
    if not files:
        raise FedleakInputError(
            f"{run_dir / 'views'} holds no saved views; run the app with the auditing strategy's "
            "views_dir=RUN_DIR/views (keep_views='disk')"
        )
    views: list[ClientUpdate] = [load_view(p) for p in files]
    if model is not None:
        views = [v.replace(model=model) for v in views]
    elif any(v.model.startswith(LIVE_PREFIX) and v.model not in _LIVE for v in views):
        raise FedleakInputError(
            f"the views name a module handed over in the app's process ({views[0].model}); "
            "pass --model path/to/file.py:factory (or package.module:factory) building the same architecture"
        )
    accuracy, timing, app = previous_run(run_dir)
    auditor = Auditor(
        model=views[0].model,
        attacks=_attack_list(list(attacks or ["auto"]), iterations, seed),
        record=False,
        attack_in="inline",
        data_spec=views[0].data_spec,
    )
    for v in views:
        seen = auditor.seen.setdefault(
            v.round or 0, {"secure_aggregation": v.num_clients > 1, "num_clients": 0, "clients": [], "node_ids": []}
        )
        seen["num_clients"] += v.num_clients
        seen["clients"].append(v.client)
        seen["node_ids"].append(v.extras.get("node_id"))
    auditor.timing.update(timing)
    auditor.attack_saved(views)
    auditor.views_dir = run_dir / "views"
    fn = records_of if callable(records_of) else _records_of(records_of)
    return write_flower_run(run_dir, auditor, accuracy=accuracy, records_of=fn, seed=seed, app=app)
