"""The numbers behind a report, read defensively from ``results.json`` (any key may be missing or of the wrong
type: a missing number is ``None``, never an exception). Pure functions over plain dicts: no I/O, no plots.

Inversion counts come only from entries of one kind of update ("sent": what the clients really sent; "probe":
gradients the audit computed itself), and "rebuilt" is each target's own ``rebuilt`` (the one rule).

>>> e = {"update": "sent", "targets": [{"psnr": 38.2, "rebuilt": True}, {"psnr": 12.0, "rebuilt": False}]}
>>> inv = inversion_numbers([e, {**e, "update": "probe"}])
>>> (inv.recovered, inv.total, inv.psnr_median)
(1, 2, 25.1)
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

LOW_FPRS = (0.001, 0.01, 0.1)


def as_dict(x: Any) -> dict:
    """``x`` if it is a dict, else an empty dict."""
    return x if isinstance(x, dict) else {}


def as_list(x: Any) -> list:
    """``x`` if it is a list, else an empty list."""
    return x if isinstance(x, list) else []


def number(x: Any) -> float | None:
    """A finite JSON number as float; ``None`` for anything else (strings, bools, null, NaN)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def text(x: Any, default: str = "") -> str:
    """A string field as str (numbers are shown as written); ``default`` when absent."""
    if isinstance(x, str):
        return x
    if number(x) is not None:
        return f"{x:g}" if isinstance(x, float) else str(x)
    return default


def tpr_at(tpr_at_fpr: Any, fpr: float) -> float | None:
    """The TPR recorded for false-positive rate ``fpr`` in a ``{"0.01": tpr, ...}`` dict."""
    for key, value in as_dict(tpr_at_fpr).items():
        try:
            if math.isclose(float(key), fpr, rel_tol=1e-6):
                return number(value)
        except ValueError:
            continue
    return None


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _mean(xs: list[float]) -> float | None:
    return statistics.fmean(xs) if xs else None


def _field(records: list[dict], key: str) -> list[float]:
    """The numbers under ``key`` in each record that has one."""
    return [v for r in records if (v := number(r.get(key))) is not None]


def _first(*values: float | None) -> float | None:
    return next((v for v in values if v is not None), None)


@dataclass(frozen=True)
class InversionNumbers:
    """Gradient inversion over the entries of one kind ("sent" or "probe") of one scenario."""

    recovered: int | None  # targets rebuilt by the one rule
    total: int | None
    psnr_median: float | None
    ssim_mean: float | None
    label_accuracy: float | None
    baseline_psnr_median: float | None
    update: str = "sent"
    federation: str = ""
    records_per_update: int | None = None


def case_recovered(case: dict) -> tuple[int | None, int | None]:
    """(rebuilt, total) for one inversion entry, counted from its targets' ``rebuilt``."""
    targets = [as_dict(t) for t in as_list(case.get("targets"))]
    flags = [t.get("rebuilt") for t in targets if isinstance(t.get("rebuilt"), bool)]
    if not flags:
        return None, None
    return sum(flags), len(flags)


def inversion_numbers(cases: Any, update: str = "sent") -> InversionNumbers | None:
    """Totals over the done inversion entries of one kind of update: images rebuilt, median PSNR of all
    targets, mean SSIM, label accuracy, median trivial baseline."""
    cases = [as_dict(c) for c in as_list(cases)]
    cases = [c for c in cases if c.get("update") == update and c.get("status", "done") == "done"]
    if not cases:
        return None
    targets = [as_dict(t) for c in cases for t in as_list(c.get("targets"))]
    psnrs, ssims = _field(targets, "psnr"), _field(targets, "ssim")
    labelled = [t for t in targets if t.get("label") is not None and t.get("recovered_label") is not None]
    counts = [case_recovered(c) for c in cases]
    known = [(r, t) for r, t in counts if r is not None and t is not None]
    return InversionNumbers(
        recovered=sum(r for r, _ in known) if known else None,
        total=sum(t for _, t in known) if known else None,
        psnr_median=_median(psnrs),
        ssim_mean=_mean(ssims),
        label_accuracy=_mean([float(t["label"] == t["recovered_label"]) for t in labelled]) if labelled else None,
        baseline_psnr_median=_median(_field(targets, "baseline_psnr")),
        update=update,
        federation=text(cases[0].get("federation")),
        records_per_update=int(r)
        if (r := number(as_dict(cases[0].get("realism")).get("records_per_update")))
        else None,
    )


@dataclass(frozen=True)
class AttackRow:
    """One membership attack against one target model (``target``: a short name for sentences)."""

    target: str
    attack: str
    auc: float | None
    tprs: tuple[float | None, ...]  # at LOW_FPRS; None where not resolvable
    balanced_accuracy: float | None
    auc_ci: tuple[float, float] | None = None
    tpr_cis: tuple[tuple[float, float] | None, ...] = ()
    members: int | None = None
    non_members: int | None = None
    federation: str = ""

    @property
    def tpr1(self) -> float | None:
        return self.tprs[LOW_FPRS.index(0.01)]


def roc_points(attack: Any) -> tuple[list, list]:
    """The (fpr, tpr) lists of an attack's ROC curve (``curve``)."""
    c = as_dict(as_dict(attack).get("curve"))
    return as_list(c.get("fpr")), as_list(c.get("tpr"))


def interval(x: Any) -> tuple[float, float] | None:
    """A [lo, hi] pair of numbers as a tuple, else None."""
    xs = as_list(x)
    if len(xs) != 2 or any(number(v) is None for v in xs):
        return None
    return (float(xs[0]), float(xs[1]))


def target_name(entry: dict) -> str:
    """'the global model', "client 3's update", or what the entry calls its target."""
    key = entry.get("target")
    if key == "global":
        return "the global model"
    if isinstance(key, str) and key.startswith("client:"):
        return f"client {key.split(':', 1)[1]}'s update"
    return text(key) or text(entry.get("description")) or "the model"


def attack_rows(entry: Any) -> list[AttackRow]:
    """The attacks of one membership entry (``{"target", "attacks": {name: {...}}}``, or a single attack
    written flat with ``auc`` and ``tpr_at_fpr`` at the top level)."""
    entry = as_dict(entry)
    target = target_name(entry)
    federation = text(as_dict(entry.get("federation")).get("name"))
    attacks = as_dict(entry.get("attacks"))
    rows = []
    for name, a in attacks.items():
        a = as_dict(a)
        counts = as_dict(a.get("counts"))
        cis = as_dict(a.get("tpr_at_fpr_ci"))
        rows.append(
            AttackRow(
                target=target,
                attack=str(name),
                auc=number(a.get("auc")),
                tprs=tuple(tpr_at(a.get("tpr_at_fpr"), f) for f in LOW_FPRS),
                balanced_accuracy=number(a.get("balanced_accuracy")),
                auc_ci=interval(a.get("auc_ci")),
                tpr_cis=tuple(interval(cis.get(f"{f:g}")) for f in LOW_FPRS),
                members=int(m) if (m := number(counts.get("members"))) is not None else None,
                non_members=int(m) if (m := number(counts.get("non_members"))) is not None else None,
                federation=federation,
            )
        )
    return rows


@dataclass(frozen=True)
class MembershipNumbers:
    """The strongest membership attack of one scenario, by AUC and by TPR at 1% FPR (maybe different ones)."""

    auc: float | None
    auc_by: str
    tpr1: float | None
    tpr1_by: str
    federation: str = ""
    auc_ci: tuple[float, float] | None = None
    tpr1_ci: tuple[float, float] | None = None
    non_members: int | None = None


def membership_numbers(entries: Any) -> MembershipNumbers | None:
    rows = [r for e in as_list(entries) for r in attack_rows(e)]
    by_auc = [r for r in rows if r.auc is not None]
    by_tpr = [r for r in rows if r.tpr1 is not None]
    if not by_auc and not by_tpr:
        return None
    best_auc = max(by_auc, key=lambda r: r.auc) if by_auc else None  # type: ignore[arg-type,return-value]
    best_tpr = max(by_tpr, key=lambda r: r.tpr1) if by_tpr else None  # type: ignore[arg-type,return-value]
    return MembershipNumbers(
        auc=best_auc.auc if best_auc else None,
        auc_by=f"{best_auc.attack} on {best_auc.target}" if best_auc else "",
        tpr1=best_tpr.tpr1 if best_tpr else None,
        tpr1_by=f"{best_tpr.attack} on {best_tpr.target}" if best_tpr else "",
        federation=(best_auc or best_tpr).federation,  # type: ignore[union-attr]
        auc_ci=best_auc.auc_ci if best_auc else None,
        tpr1_ci=best_tpr.tpr_cis[LOW_FPRS.index(0.01)] if best_tpr and best_tpr.tpr_cis else None,
        non_members=(best_tpr or best_auc).non_members,  # type: ignore[union-attr]
    )


@dataclass(frozen=True)
class TextNumbers:
    """Text (token) recovery over the text cases of one scenario."""

    token_accuracy_median: float | None
    exact_match_rate: float | None


def text_numbers(cases: Any) -> TextNumbers | None:
    cases = [as_dict(c) for c in as_list(cases)]
    if not cases:
        return None
    targets = [as_dict(t) for c in cases for t in as_list(c.get("targets"))]
    accs = _field(targets, "token_accuracy")
    summaries = [as_dict(c.get("summary")) for c in cases]
    exact = _field(summaries, "exact_match_rate")
    return TextNumbers(
        token_accuracy_median=_first(_median(accs), _median(_field(summaries, "token_accuracy_median"))),
        exact_match_rate=_mean(exact),
    )


@dataclass(frozen=True)
class PrivacyNumbers:
    """A formal guarantee (epsilon, delta from an accountant) and the empirical lower bound on epsilon."""

    epsilon: float | None
    delta: float | None
    accountant: str
    lower_bound: float | None
    federation: str = ""

    @property
    def violated(self) -> bool:
        """The measured lower bound exceeds the proven epsilon: the DP code or its accounting is wrong."""
        if self.epsilon is None or self.lower_bound is None:
            return False
        return self.lower_bound > self.epsilon * (1 + 1e-9)


def privacy_numbers(privacy: Any) -> PrivacyNumbers | None:
    """One federation's privacy record; for a scenario's list of them, the one with the empirical lower bound
    (the federation membership was measured on), else the first."""
    if isinstance(privacy, list):
        blocks = [as_dict(b) for b in privacy]
        with_bound = [b for b in blocks if number(b.get("epsilon_lower_bound")) is not None]
        privacy = (with_bound or blocks or [{}])[0]
    p = as_dict(privacy)
    nums = PrivacyNumbers(
        epsilon=number(p.get("epsilon")),
        delta=number(p.get("delta")),
        accountant=text(p.get("accountant")),
        lower_bound=number(p.get("epsilon_lower_bound")),
        federation=text(p.get("federation")),
    )
    return None if nums.epsilon is None and nums.lower_bound is None else nums


@dataclass(frozen=True)
class ScenarioNumbers:
    """Everything the verdict and the privacy-utility table say about one defense scenario."""

    defense: str
    accuracy: float | None  # of the main federation's final model
    inversion: InversionNumbers | None  # the updates the clients sent
    membership: MembershipNumbers | None
    text: TextNumbers | None
    privacy: PrivacyNumbers | None
    federation: str = ""  # the main federation's name
    membership_accuracy: float | None = None  # of the model membership attacked (its own federation's)
    probe: InversionNumbers | None = None  # gradients the audit computed itself (labelled, never the headline)

    @property
    def undefended(self) -> bool:
        return self.defense.strip().lower() in ("", "none")


def final_accuracy(training: Any) -> float | None:
    """The training record's ``final_test_accuracy``."""
    return number(as_dict(training).get("final_test_accuracy"))


def scenario_numbers(scenario: Any) -> ScenarioNumbers:
    s = as_dict(scenario)
    parts = [as_dict(p) for p in as_list(s.get("membership"))]
    m_acc = number(as_dict(parts[0].get("federation")).get("test_accuracy")) if parts else None
    return ScenarioNumbers(
        defense=text(s.get("defense"), "none") or "none",
        accuracy=final_accuracy(s.get("training")),
        inversion=inversion_numbers(s.get("inversion"), "sent"),
        membership=membership_numbers(s.get("membership")),
        text=text_numbers(s.get("text")),
        privacy=privacy_numbers(s.get("privacy")),
        federation=text(as_dict(as_dict(s.get("training")).get("federation")).get("name")),
        membership_accuracy=m_acc,
        probe=inversion_numbers(s.get("inversion"), "probe"),
    )
