"""The audit: a config -> for each scenario (undefended, then each defense) the federations it describes,
trained once -> attacks on the updates the server received and the models it holds -> ``results.json`` (the
schema of :mod:`fedleak.results`), pictures and ``report.html`` in a resumable run folder.

    >>> from fedleak.audit.config import parse_config
    >>> from fedleak.audit.pipeline import run_audit
    >>> results = run_audit(parse_config({"federation": {"rounds": 1}}), out="runs/example")  # doctest: +SKIP
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from pathlib import Path

from fedleak import __version__
from fedleak.audit import stages
from fedleak.audit.config import AuditConfig, dump_config
from fedleak.audit.runfolder import RunFolder
from fedleak.audit.scenario import ScenarioSetup, build_scenario, federation_infos
from fedleak.audit.slug import scenario_slug
from fedleak.audit.validate import validate_config
from fedleak.report.verdict import audit_verdict
from fedleak.results import (
    AuditResults,
    DPAudit,
    InversionEntry,
    MembershipPart,
    Privacy,
    Scenario,
    Setup,
    TextEntry,
    Training,
)
from fedleak.runio import atomic_write_json

Echo = Callable[[str], None]


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "fedleak": __version__}
    for pkg in ("torch", "opacus", "flwr", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def setup_record(config: AuditConfig) -> Setup:
    main, second = federation_infos(config)
    return Setup(
        engine=config.engine,
        federations=[main] + ([second] if second else []),
        defenses=list(config.defenses),
        threat_model={"server": config.threat.server, "grants": list(config.threat.grants)},
        seed=config.seed,
    )


def _keep(config: AuditConfig, setup: ScenarioSetup) -> tuple[dict[int, set[int]], dict[int, set[int]]]:
    """round -> clients whose sent update each federation's training keeps (main, membership)."""
    main: dict[int, set[int]] = {}
    if config.inversion.enabled:
        for r in config.inversion.rounds:
            main.setdefault(r, set()).update(config.inversion.clients)
    m = config.membership
    mia: dict[int, set[int]] = {}
    if m.enabled and "client" in m.targets:
        target = mia if setup.separate_membership else main
        target.setdefault(setup.membership.config.rounds, set()).add(m.client)
    return main, mia


def run_scenario(run: RunFolder, config: AuditConfig, setup: ScenarioSetup, echo: Echo) -> Scenario:
    """Train, then attack, one scenario; each step a resumable stage."""
    slug = scenario_slug(setup.defense)
    keep_main, keep_mia = _keep(config, setup)
    trained = run.stage(
        f"train-main-{slug}", lambda: stages.train_stage(run, config, setup.main, slug, keep_main, echo)
    )
    scenario = Scenario(
        defense=setup.defense,
        training=Training.from_dict(trained["training"]),
        privacy=[_privacy_of(setup.main.info.name, trained["privacy"])],
    )
    if config.inversion.enabled:
        inv = config.inversion
        probe = inv.probe_batch_size > 0 and (setup.defense == "none" or inv.probe_defended)
        kinds = ["sent"] + (["probe"] if probe else [])
        for kind in kinds:
            for rnd in config.inversion.rounds:
                entries = run.stage(
                    f"invert-{slug}-{kind}-r{rnd}",
                    lambda k=kind, r=rnd: stages.inversion_stage(run, config, setup.main, slug, trained, r, k, echo),
                )
                scenario.inversion += [InversionEntry.from_dict(e) for e in entries]
    if config.membership.enabled:
        mtrained = trained
        if setup.separate_membership:
            fs = setup.membership
            mtrained = run.stage(
                f"train-membership-{slug}", lambda: stages.train_stage(run, config, fs, slug, keep_mia, echo)
            )
            scenario.membership_training = Training.from_dict(mtrained["training"])
        mia = run.stage(
            f"membership-{slug}", lambda: stages.membership_stage(run, config, setup.membership, slug, mtrained, echo)
        )
        scenario.membership = [MembershipPart.from_dict(p) for p in mia["parts"]]
        priv = Privacy.from_dict(mia["privacy"])
        scenario.privacy = [p for p in scenario.privacy if p.federation != priv.federation] + [priv]
    return scenario


def _privacy_of(federation: str, block: dict) -> Privacy:
    return Privacy(
        federation=federation,
        epsilon=block.get("epsilon"),
        delta=block.get("delta"),
        accountant=block.get("accountant"),
        details={k: v for k, v in block.items() if k not in ("epsilon", "delta", "accountant")},
    )


def run_audit(
    config: AuditConfig, out: str | Path, resume: bool = False, echo: Echo = print, report: bool = True
) -> AuditResults:
    """Run (or continue) an audit into the run folder ``out``; returns the results record. Everything in the
    config is checked before the run folder is created."""
    t0 = time.perf_counter()
    validate_config(config)
    run = RunFolder(out, dump_config(config), resume=resume, seed=config.seed)
    scenarios = []
    for defense in ["none", *config.defenses]:
        scenarios.append(run_scenario(run, config, build_scenario(config, defense), echo))
    if config.text.enabled and scenarios:
        scenarios[0].text = [TextEntry.from_dict(run.stage("text", lambda: stages.text_stage(config, echo)))]
    results = AuditResults(
        seed=config.seed,
        fedleak_version=__version__,
        scenarios=scenarios,
        setup=setup_record(config),
        config=config.resolved(),
        versions=versions(),
    )
    if config.audit_dp.enabled:
        results.dp_audit = DPAudit.from_dict(run.stage("audit-dp", lambda: stages.dp_audit_stage(run, config, echo)))
    results.verdict = audit_verdict(results)
    if results.dp_audit is not None:
        d = results.dp_audit
        results.verdict.append(
            f"Auditing {d.defense} itself with {d.canaries['total']} {d.canary_kind} canaries: {d.verdict}"
        )
    results.seconds_total = round(time.perf_counter() - t0, 2)
    atomic_write_json(run.file("results.json"), results.to_dict())
    echo("verdict:")
    for line in results.verdict:
        echo(f"- {line}")
    if report:
        from fedleak.report import build_report

        path = build_report(run.path)
        echo(f"report: {path}")
    return results
