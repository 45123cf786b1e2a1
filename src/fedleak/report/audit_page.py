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


SETUP_KEYS = (
    "engine",
    "dataset",
    "partition",
    "model",
    "clients",
    "rounds",
    "fraction",
    "mode",
    "local_epochs",
    "batch_size",
    "lr",
    "threat_model",
    "defenses",
    "seed",
)


def setup_rows(results: dict, defenses: list[str]) -> list[tuple[str, str]]:
    """(label, value) rows of the setup: data, model, training, threat model, defenses, seed, versions."""
    s = as_dict(results.get("setup"))
    data = show(s.get("dataset")) + (f", partition {show(s['partition'])}" if "partition" in s else "")
    rows = [("Data", data), ("Model", show(s.get("model")))]
    training = [
        f"{show(s['clients'])} clients" if "clients" in s else "",
        f"{show(s['rounds'])} rounds" if "rounds" in s else "",
        f"fraction {show(s['fraction'])} per round" if "fraction" in s else "",
        show(s["mode"]) if "mode" in s else "",
        f"{show(s['local_epochs'])} local epoch(s)" if "local_epochs" in s else "",
        f"batch size {show(s['batch_size'])}" if "batch_size" in s else "",
        f"learning rate {show(s['lr'])}" if "lr" in s else "",
    ]
    rows.append(("Federated training", ", ".join(t for t in training if t) or "—"))
    if "engine" in s:
        rows.append(("Engine", show(s["engine"])))
    tm = as_dict(s.get("threat_model"))
    server = show(tm.get("server")) if tm.get("server") else "—"
    grants = show(tm.get("grants")) if tm.get("grants") else "nothing beyond the update"
    rows.append(("Threat model", f"server: {server}; it is granted: {grants}"))
    rows += [(str(k).replace("_", " ").capitalize(), show(v)) for k, v in s.items() if k not in SETUP_KEYS]
    rows.append(("Defenses compared", ", ".join(defenses) or "—"))
    rows.append(("Seed", show(results.get("seed"))))
    secs = number(results.get("seconds_total"))
    if secs is not None:
        rows.append(("Run time", f"{secs:.1f} s"))
    versions = {"fedleak": results.get("fedleak_version"), **as_dict(results.get("versions"))}
    listed = [f"{k} {show(v)}" for k, v in versions.items() if v is not None]
    rows.append(("Versions", ", ".join(listed) or "—"))
    return rows


def scenario_view(scenario: Any, index: int, run_dir: Path) -> ScenarioView:
    s = as_dict(scenario)
    nums = scenario_numbers(s)
    return ScenarioView(
        defense=nums.defense,
        anchor=f"scenario-{index}",
        numbers=nums,
        inversion=[inversion_view(c, run_dir) for c in as_list(s.get("inversion"))],
        text=[text_view(c) for c in as_list(s.get("text"))],
        membership=[membership_view(e, run_dir) for e in as_list(s.get("membership"))],
        membership_note=membership_note(s.get("membership_training")),
    )


def membership_note(training: Any) -> str:
    """Where the membership part trained its own federation (``membership_training``), what it reached."""
    t = as_dict(training)
    if not t:
        return ""
    acc = final_accuracy(t)
    where = f" on {text(t.get('dataset'))}" if text(t.get("dataset")) else ""
    reached = f"; its final test accuracy is {100 * acc:.1f}%" if acc is not None else ""
    return f"The membership attacks target a federation trained separately{where}{reached}."


def audit_scenarios(results: dict) -> list[dict]:
    """The scenarios of results.json, with a top-level ``text`` case (the audit runs text attacks once,
    without defense) attached to the undefended scenario, or to a scenario of its own when there is none."""
    scenarios = [dict(as_dict(s)) for s in as_list(results.get("scenarios"))]  # copies: results stay as read
    top = results.get("text")
    cases = [c for c in (top if isinstance(top, list) else [top]) if isinstance(c, dict)]
    if cases:
        base = next((s for s in scenarios if text(s.get("defense"), "none").lower() in ("", "none")), None)
        if base is None:
            base = {"defense": "none"}
            scenarios.append(base)
        base["text"] = [*as_list(base.get("text")), *cases]
    return scenarios


def audit_context(results: dict, run_dir: Path) -> dict[str, Any]:
    """Everything audit.html.j2 shows."""
    raw = audit_scenarios(results)
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
        "config": results.get("config"),
        "scenarios": scenarios,
        "numbers": numbers,
        "has_inversion": any(s.inversion or s.text for s in scenarios),
        "has_membership": any(s.membership for s in scenarios),
        "privacy_utility_plot": _uri(privacy_utility_png(numbers)),
        "accuracy_plot": _uri(accuracy_png(rounds)),
        "threshold_db": next((n.inversion.threshold_db for n in numbers if n.inversion), None),
    }
