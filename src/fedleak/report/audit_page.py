"""The audit report's context: verdict, setup, reconstructions, membership, defenses (privacy-utility table
and plot), from a results.json of kind "audit"."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedleak.report.html import show
from fedleak.report.load import png_data_uri
from fedleak.report.measures import (
    ScenarioNumbers,
    as_dict,
    as_list,
    final_accuracy,
    number,
    scenario_numbers,
    text,
)
from fedleak.report.plots import accuracy_png, privacy_utility_png
from fedleak.report.verdict import compose_verdict, violation_message
from fedleak.report.views import (
    InversionView,
    MembershipView,
    TextView,
    inversion_view,
    membership_view,
    text_view,
)
from fedleak.results import AuditResults, check_schema


@dataclass(frozen=True)
class ScenarioView:
    defense: str
    anchor: str
    numbers: ScenarioNumbers
    inversion: list[InversionView]
    text: list[TextView]
    membership: list[MembershipView]
    membership_note: str = ""


def _uri(png: bytes | None) -> str | None:
    return png_data_uri(png) if png is not None else None


def given_verdict(results: dict) -> list[str]:
    """The verdict results.json carries (a list of sentences, or one string), else []."""
    v = results.get("verdict")
    items = v if isinstance(v, list) else [v]
    return [s for s in (text(x) for x in items) if s.strip()]


def federation_text(f: dict) -> str:
    """'lfw-faces, lenet, 10 clients, 3 rounds, fedavg, 3 local epoch(s), batch 8, lr 0.1, iid'; a fact the run
    did not know (null, e.g. in a Flower run) is left out."""
    parts = [
        show(f.get("dataset")),
        show(f.get("model")),
        f"{show(f.get('clients'))} clients",
        f"{show(f.get('rounds'))} rounds",
        show(f.get("mode")),
        f"{show(f.get('local_epochs'))} local epoch(s)" if f.get("local_epochs") is not None else "",
        f"batch size {show(f.get('batch_size'))}" if f.get("batch_size") is not None else "",
        f"learning rate {show(f.get('lr'))}" if f.get("lr") is not None else "",
        f"partition {show(f.get('partition'))}",
    ]
    parts = [p for p in parts if p]
    acc = number(f.get("test_accuracy"))
    return ", ".join(parts) + (f"; final test accuracy {100 * acc:.1f}%" if acc is not None else "")


def setup_rows(results: dict, defenses: list[str]) -> list[tuple[str, str]]:
    """(label, value) rows of the setup: every federation the audit trained (what each figure speaks of), the
    engine, threat model, defenses, seed, run time and versions."""
    s = as_dict(results.get("setup"))
    trained = {}
    for sc in as_list(results.get("scenarios")):
        sc = as_dict(sc)
        if text(sc.get("defense")) == "none":
            for key in ("training", "membership_training"):
                f = as_dict(as_dict(sc.get(key)).get("federation"))
                if f:
                    trained[text(f.get("name"))] = f
    rows = []
    for f in as_list(s.get("federations")):
        f = as_dict(f)
        name = text(f.get("name"), "federation")
        rows.append((name[:1].upper() + name[1:], federation_text(trained.get(name, f))))
    rows.append(("Engine", show(s.get("engine"))))
    tm = as_dict(s.get("threat_model"))
    server = show(tm.get("server")) if tm.get("server") else "—"
    grants = show(tm.get("grants")) if tm.get("grants") else "nothing beyond the update"
    rows.append(("Threat model", f"server: {server}; it is granted: {grants}"))
    rows.append(("Defenses compared", ", ".join(defenses) or "—"))
    rows.append(("Seed", show(results.get("seed"))))
    secs = number(results.get("seconds_total"))
    if secs is not None:
        rows.append(("Run time", f"{secs:.1f} s"))
    versions = {"fedleak": results.get("fedleak_version"), **as_dict(results.get("versions"))}
    listed = [f"{k} {show(v)}" for k, v in versions.items() if v is not None]
    rows.append(("Versions", ", ".join(listed) or "—"))
    return rows


def rounds_seen(results: dict) -> list[dict[str, Any]]:
    """Per round of a Flower run: which client replied from which node (or that the server saw only an
    aggregate), the test accuracy, the round's wall time and the seconds the audit added to it. Empty for runs
    whose rounds carry none of these (fedleak's own federations)."""
    for sc in as_list(results.get("scenarios")):
        rounds = [as_dict(r) for r in as_list(as_dict(as_dict(sc).get("training")).get("rounds"))]
        if not any(r.get("node_ids") or r.get("seconds") is not None for r in rounds):
            continue
        rows = []
        for r in rounds:
            clients, nodes = as_list(r.get("clients")), as_list(r.get("node_ids"))
            if clients:
                who = ", ".join(
                    f"{show(c)} ← node {show(n)}" if n is not None and n != c else f"node {show(c)} (no client id)"
                    for c, n in zip(clients, nodes + [None] * len(clients), strict=False)
                )
            elif nodes:
                who = f"only the aggregate of {len(nodes)} nodes ({', '.join(show(n) for n in nodes)})"
            else:
                who = "—"
            rows.append(
                {
                    "round": show(r.get("round")),
                    "who": who,
                    "test_accuracy": number(r.get("test_accuracy")),
                    "seconds": number(r.get("seconds")),
                    "audit_seconds": number(r.get("audit_seconds_on_path")),
                }
            )
        return rows
    return []


def scenario_view(scenario: Any, index: int, run_dir: Path) -> ScenarioView:
    s = as_dict(scenario)
    nums = scenario_numbers(s)
    anchor = f"scenario-{index}"
    return ScenarioView(
        defense=nums.defense,
        anchor=anchor,
        numbers=nums,
        inversion=[
            inversion_view(c, run_dir, anchor=f"{anchor}-card-{j}") for j, c in enumerate(as_list(s.get("inversion")))
        ],
        text=[text_view(c) for c in as_list(s.get("text"))],
        membership=[membership_view(e, run_dir) for e in as_list(s.get("membership"))],
        membership_note=membership_note(s.get("membership_training")),
    )


def membership_note(training: Any) -> str:
    """Where the membership part trained its own federation (``membership_training``), what it reached."""
    t = as_dict(training)
    if not t:
        return ""
    f = as_dict(t.get("federation"))
    acc = final_accuracy(t)
    reached = f"; its final test accuracy is {100 * acc:.1f}%" if acc is not None else ""
    return (
        f"The membership attacks target {text(f.get('name'), 'a separate federation')}, trained separately"
        f"{reached}. Its figures, and its accuracy cost, are that federation's."
    )


def dp_audit_view(block: Any, run_dir: Path) -> dict[str, Any] | None:
    """The canary audit's figures and histogram, when the audit ran one."""
    d = as_dict(block)
    if not d:
        return None
    from fedleak.report.views import load_picture

    return {**d, "picture": load_picture(run_dir, d.get("image"))}


def audit_context(results: dict, run_dir: Path) -> dict[str, Any]:
    """Everything audit.html.j2 shows. The results are checked against the schema first (a run folder of another
    schema version is refused with one line naming the fedleak that wrote it)."""
    check_schema(results, str(Path(run_dir) / "results.json"))
    results = AuditResults.from_dict(results).to_dict()
    raw = [as_dict(s) for s in as_list(results.get("scenarios"))]
    scenarios = [scenario_view(s, i, run_dir) for i, s in enumerate(raw)]
    numbers = [s.numbers for s in scenarios]
    server = text(as_dict(as_dict(results.get("setup")).get("threat_model")).get("server"), "curious")
    verdict = given_verdict(results)
    rounds = [
        (s.defense, as_list(as_dict(r.get("training")).get("rounds"))) for s, r in zip(scenarios, raw, strict=True)
    ]
    return {
        "title": "fedleak audit",
        "run_name": Path(run_dir).resolve().name,
        "alerts": [m for n in numbers if (m := violation_message(n))],
        "verdict": verdict or compose_verdict(numbers, server, violations=False),
        "verdict_composed": not verdict,
        "setup": setup_rows(results, [n.defense for n in numbers]),
        "rounds_seen": rounds_seen(results),
        "config": results.get("config"),
        "scenarios": scenarios,
        "numbers": numbers,
        "has_inversion": any(s.inversion or s.text for s in scenarios),
        "has_membership": any(s.membership for s in scenarios),
        "privacy_utility_plot": _uri(privacy_utility_png(numbers)),
        "accuracy_plot": _uri(accuracy_png(rounds)),
        "dp_audit": dp_audit_view(results.get("dp_audit"), run_dir),
    }
