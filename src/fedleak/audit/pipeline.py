"""The audit: a config -> federated training per scenario (undefended, then each defense) -> attacks on the
updates and models the server saw -> ``results.json``, pictures and ``report.html`` in a resumable run folder.

    >>> from fedleak.audit.config import parse_config
    >>> from fedleak.audit.pipeline import run_audit
    >>> results = run_audit(parse_config({"federation": {"rounds": 1}}), out="runs/example")  # doctest: +SKIP
"""

from __future__ import annotations

import platform
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedleak import __version__
from fedleak.audit.config import AuditConfig, dump_config
from fedleak.audit.runfolder import RunFolder
from fedleak.errors import FedleakInputError
from fedleak.runio import atomic_write_json

Echo = Callable[[str], None]


def scenario_slug(defense: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", defense).strip("-") or "none"


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "fedleak": __version__}
    for pkg in ("torch", "opacus", "flwr", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def verdict(scenarios: list[dict]) -> list[str]:
    """The plain-words verdict, composed from the numbers by the report's rules (one set of rules)."""
    from fedleak.report.measures import scenario_numbers
    from fedleak.report.verdict import compose_verdict

    return compose_verdict([scenario_numbers(s) for s in scenarios])


def validate(config: AuditConfig) -> None:
    """Check everything a person can get wrong before any work starts or any file is written."""
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
        from fedleak.attacks.inversion import ATTACKS as INV

        for a in config.inversion.attacks:
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


def run_audit(
    config: AuditConfig, out: str | Path, resume: bool = False, echo: Echo = print, report: bool = True
) -> dict[str, Any]:
    """Run (or continue) an audit into the run folder ``out``; returns the results dict."""
    from fedleak.audit import stages

    t0 = time.perf_counter()
    validate(config)
    run = RunFolder(out, dump_config(config), resume=resume, seed=config.seed)
    scenarios = []
    for defense in ["none", *config.defenses]:
        scenarios.append(stages.scenario(run, config, defense, echo))
    results = {
        "kind": "audit",
        "fedleak_version": __version__,
        "seed": config.seed,
        "versions": versions(),
        "config": config.resolved(),
        "setup": stages.setup_summary(config),
        "scenarios": scenarios,
    }
    if config.text.enabled:
        scenarios[0]["text"] = [run.stage("text", lambda: stages.text_case(run, config, echo))]
    results["verdict"] = verdict(scenarios)
    results["seconds_total"] = round(time.perf_counter() - t0, 2)
    atomic_write_json(run.file("results.json"), results)
    if report:
        from fedleak.report import build_report

        path = build_report(run.path)
        echo(f"report: {path}")
    return results
