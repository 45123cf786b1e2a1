"""Contexts for the simpler pages of single-experiment run folders: kind "inversion" (``fedleak invert``),
"membership" (``fedleak mia``) and "sweep" (a table of whatever rows it holds)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedleak.report.html import show
from fedleak.report.load import picture
from fedleak.report.measures import ScenarioNumbers, as_dict, as_list, number, privacy_numbers, text
from fedleak.report.verdict import violation_message
from fedleak.report.views import Picture, inversion_view, membership_view, text_view

SHOWN_ELSEWHERE = {
    "kind",
    "targets",
    "summary",
    "tpr_at_fpr",
    "roc",
    "curve",
    "target",
    "target_accuracy",
    "privacy",
    "versions",
    "rows",
    "image",
    "images",
    "config",
}


def _flat(value: Any) -> bool:
    """A value a fact row can show in words: a scalar, a list of scalars, a dict of scalars."""

    def scalar(v: Any) -> bool:
        return not isinstance(v, (dict, list))

    if isinstance(value, list):
        return all(map(scalar, value))
    if isinstance(value, dict):
        return all(map(scalar, value.values()))
    return True


def run_facts(results: dict) -> list[tuple[str, str]]:
    """(label, value) for the plain top-level fields (attack, model, dataset, seed, defenses, ...) and the
    versions; what the page shows elsewhere (targets, attacks per name, ...) is left out."""
    rows = [(str(k).replace("_", " "), show(v)) for k, v in results.items() if k not in SHOWN_ELSEWHERE and _flat(v)]
    versions = as_dict(results.get("versions"))
    if versions:
        rows.append(("versions", show(versions)))
    return rows


def _base(results: dict, run_dir: Path, title: str) -> dict[str, Any]:
    privacy = privacy_numbers(results.get("privacy"))
    defense = text(results.get("defense"), "this defense")
    alert = violation_message(ScenarioNumbers(defense, None, None, None, None, privacy))
    return {
        "alerts": [alert] if alert else [],
        "title": title,
        "kind": results.get("kind"),
        "run_name": Path(run_dir).resolve().name,
        "facts": run_facts(results),
        "privacy": privacy,
        "config": results.get("config"),
    }


def inversion_context(results: dict, run_dir: Path) -> dict[str, Any]:
    """One gradient-inversion experiment: picture, summary, a row per target (or per text, for text)."""
    attack, model, dataset = (text(results.get(k)) for k in ("attack", "model", "dataset"))
    where = " / ".join(p for p in (model, dataset) if p)
    title = "Gradient inversion" + (f": {attack}" if attack else "") + (f" on {where}" if where else "")
    ctx = _base(results, run_dir, title)
    targets = as_list(results.get("targets"))
    if any(isinstance(t, dict) and "text" in t for t in targets):
        ctx["text_case"] = text_view(results)
    else:
        ctx["inversion_case"] = inversion_view(results, run_dir, default_picture="reconstructions.png")
    return ctx


def membership_context(results: dict, run_dir: Path) -> dict[str, Any]:
    """One membership-inference experiment: ROC picture, AUC and TPR at low FPR per attack, target
    accuracy."""
    attack = text(results.get("attack"))
    ctx = _base(results, run_dir, "Membership inference" + (f": {attack}" if attack and attack != "all" else ""))
    ctx["membership"] = membership_view(results, run_dir, default_picture="roc.png")
    return ctx


def sweep_rows(results: dict) -> list[dict]:
    """The rows of a sweep: ``rows``, else the first list of objects in results.json."""
    for value in [results.get("rows"), *results.values()]:
        rows = [r for r in as_list(value) if isinstance(r, dict)]
        if rows:
            return rows
    return []


SWEEP_LABELS = {
    "utility": "test accuracy (defended training)",
    "mia_target_accuracy": "test accuracy (membership target)",
    "psnr_median": "median PSNR (dB)",
    "ssim_mean": "mean SSIM",
    "label_accuracy": "labels right",
    "rebuilt": "images rebuilt",
    "auc": "AUC",
    "tpr_at_fpr_0.001": "TPR at 0.1% FPR",
    "tpr_at_fpr_0.01": "TPR at 1% FPR",
    "tpr_at_fpr_0.1": "TPR at 10% FPR",
    "epsilon": "ε proven",
    "epsilon_lower_bound": "ε lower bound",
    "seconds": "seconds",
}
PERCENT_COLUMNS = {
    "utility",
    "mia_target_accuracy",
    "label_accuracy",
    "tpr_at_fpr_0.001",
    "tpr_at_fpr_0.01",
    "tpr_at_fpr_0.1",
}


def _cell(column: str, value: Any) -> str:
    """A sweep cell rounded for reading: percentages, 3 digits for AUC/SSIM, 1 for dB and seconds."""
    x = number(value)
    if x is None:
        return "not resolvable" if value is None and column.startswith("tpr_at_fpr") else show(value)
    if column in PERCENT_COLUMNS:
        return f"{100 * x:.1f}%"
    if column in ("auc", "ssim_mean"):
        return f"{x:.3f}"
    if column in ("epsilon", "epsilon_lower_bound"):
        return "∞" if x >= 1e300 else f"{x:.2f}"
    return f"{x:.1f}"


def sweep_context(results: dict, run_dir: Path) -> dict[str, Any]:
    """A sweep: a table with a column per key that any row has (in order of first appearance)."""
    rows = sweep_rows(results)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    ctx = _base(results, run_dir, "Sweep")
    ctx["columns"] = [SWEEP_LABELS.get(c, c.replace("_", " ")) for c in columns]
    ctx["rows"] = [[_cell(c, r.get(c)) if c in r else "—" for c in columns] for r in rows]
    names = [results.get("image"), *as_list(results.get("images"))]
    ctx["pictures"] = [Picture(picture(run_dir, n), n) for n in names if isinstance(n, str) and n]
    return ctx


def dp_audit_context(results: dict, run_dir: Path) -> dict[str, Any]:
    """A canary audit of a DP guarantee (``fedleak audit-dp``): the three figures, the canaries, the histogram."""
    priv = as_dict(results.get("privacy"))
    ctx = _base(results, run_dir, f"Privacy audit: {text(results.get('defense'))}")
    ctx["dp_audit"] = {
        "defense": text(results.get("defense")),
        "canary_kind": text(results.get("canary_kind")),
        "epsilon": priv.get("epsilon"),
        "delta": priv.get("delta"),
        "epsilon_lower_bound": priv.get("epsilon_lower_bound"),
        "epsilon_estimate": priv.get("epsilon_estimate"),
        "canaries": as_dict(priv.get("canaries")),
        "runs": priv.get("runs"),
        "confidence": priv.get("confidence"),
        "bound_exceeds_epsilon": bool(priv.get("bound_exceeds_epsilon")),
        "verdict": text(priv.get("verdict")),
        "picture": Picture(picture(run_dir, "canary_scores.png"), "canary_scores.png"),
    }
    ctx["privacy"] = None  # shown in full by the section below
    return ctx
