"""The verdict in plain words, composed from the numbers of a results record. Every figure names the
federation it was measured on; the headline counts only the updates the clients really sent; a probe (a
gradient the audit computed itself) is its own, labelled sentence.

>>> from fedleak.report.measures import InversionNumbers, ScenarioNumbers
>>> inv = InversionNumbers(recovered=9, total=10, psnr_median=31.0, ssim_mean=0.9, label_accuracy=1.0,
...                        baseline_psnr_median=14.0, federation="the faces federation")
>>> compose_verdict([ScenarioNumbers("none", 0.83, inv, None, None, None, federation="the faces federation")])[0]
'Without a defense, a curious server rebuilt 9 of 10 client images from the updates the clients of the faces \
federation sent (median PSNR 31.0 dB; a blank image scores 14.0 dB; rebuilt means at least 10 dB above that and \
SSIM at least 0.5). Final test accuracy: 83.0% on the faces federation.'
"""

from __future__ import annotations

from typing import Any

from fedleak.report.measures import (
    InversionNumbers,
    MembershipNumbers,
    PrivacyNumbers,
    ScenarioNumbers,
    TextNumbers,
    scenario_numbers,
)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _ci(ci: tuple[float, float] | None, pct: bool = False) -> str:
    if ci is None:
        return ""
    lo, hi = ci
    return f" [95% CI {_pct(lo)}-{_pct(hi)}]" if pct else f" [95% CI {lo:.2f}-{hi:.2f}]"


def inversion_phrase(inv: InversionNumbers, explain: bool = False) -> str:
    """'rebuilt 9 of 10 client images from the updates ... sent (median PSNR 31.0 dB; ...)'."""
    details = [f"median PSNR {inv.psnr_median:.1f} dB"] if inv.psnr_median is not None else []
    if inv.baseline_psnr_median is not None:
        details.append(f"a blank image scores {inv.baseline_psnr_median:.1f} dB")
    if explain:
        details.append("rebuilt means at least 10 dB above that and SSIM at least 0.5")
    note = f" ({'; '.join(details)})" if details else ""
    source = f" from the updates the clients of {inv.federation} sent" if inv.federation else " from the sent updates"
    if inv.recovered is None or inv.total is None:
        return f"scored the client images{source}{note}"
    return f"rebuilt {inv.recovered} of {inv.total} client images{source}{note}"


def probe_sentence(probe: InversionNumbers) -> str:
    """The labelled what-if: never part of the honest server's headline."""
    what = f"rebuild {probe.recovered} of {probe.total} images" if probe.total else "score the images"
    psnr = f" (median PSNR {probe.psnr_median:.1f} dB)" if probe.psnr_median is not None else ""
    where = f" of {probe.federation}" if probe.federation else ""
    n = probe.records_per_update
    records = "a few records" if n is None else ("one record" if n == 1 else f"{n} records")
    return (
        f"Probe, not what the clients{where} send: if a client sent the gradient of {records}, the server "
        f"would {what}{psnr}."
    )


def membership_phrase(mia: MembershipNumbers, explain: bool = False) -> str:
    """'on the digits federation, the strongest membership attack reaches AUC 0.71 [...] (...) and TPR ...'."""
    parts = []
    if mia.auc is not None:
        parts.append(f"AUC {mia.auc:.2f}{_ci(mia.auc_ci)} ({mia.auc_by})")
    if mia.tpr1 is not None:
        by = "" if mia.tpr1_by == mia.auc_by and mia.auc is not None else f" ({mia.tpr1_by})"
        parts.append(f"TPR {_pct(mia.tpr1)}{_ci(mia.tpr1_ci, pct=True)} at 1% FPR{by}")
    elif mia.non_members is not None:
        parts.append(f"no resolvable TPR at 1% FPR ({mia.non_members} non-members)")
    if not parts:
        return ""
    chance = " (guessing: AUC 0.50, TPR 1%)" if explain else ""
    where = f"on {mia.federation}, " if mia.federation else ""
    return f"{where}the strongest membership attack reaches " + " and ".join(parts) + chance


def text_phrase(txt: TextNumbers) -> str:
    parts = []
    if txt.token_accuracy_median is not None:
        parts.append(f"recovered a median {_pct(txt.token_accuracy_median)} of the tokens of client texts")
    if txt.exact_match_rate is not None:
        parts.append(f"{_pct(txt.exact_match_rate)} of the texts exactly")
    return ", ".join(parts)


def privacy_phrase(priv: PrivacyNumbers) -> str:
    if priv.epsilon is None:
        return ""
    where = f" on {priv.federation}" if priv.federation else ""
    if priv.epsilon >= 1e300:  # infinity, as results.json stores it
        return f"the accountant guarantees no finite ε{where}"
    delta = f", δ = {priv.delta:g}" if priv.delta is not None else ""
    return f"the accountant guarantees ε = {priv.epsilon:.2f}{delta}{where}"


def violation_message(s: ScenarioNumbers) -> str | None:
    """The loud warning for an empirical lower bound on epsilon above the proven epsilon, else None."""
    p = s.privacy
    if p is None or not p.violated:
        return None
    where = f" on {p.federation}" if p.federation else ""
    return (
        f"BUG: with {s.defense}{where}, the measured lower bound ε ≥ {p.lower_bound:.2f} exceeds the ε = "
        f"{p.epsilon:.2f} the accountant proves. The DP implementation or its accounting is wrong: do not "
        "trust this ε until it is fixed."
    )


def article(word: str) -> str:
    """'a' or 'an' before ``word`` (an honest-but-curious server, a malicious server)."""
    return "an" if word.lower().startswith(("a", "e", "i", "o", "u", "honest", "hour")) else "a"


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def _accuracy_sentence(s: ScenarioNumbers, baseline: ScenarioNumbers | None) -> str:
    """'Final test accuracy: 61.0% on the faces federation (-3.0 points against no defense), 93.1% on ...'."""
    items = []
    pairs = [(s.accuracy, s.federation, baseline.accuracy if baseline else None)]
    if s.membership and s.membership.federation and s.membership.federation != s.federation:
        pairs.append(
            (s.membership_accuracy, s.membership.federation, baseline.membership_accuracy if baseline else None)
        )
    for acc, fed, base in pairs:
        if acc is None:
            continue
        item = _pct(acc) + (f" on {fed}" if fed else "")
        if baseline is not None and baseline is not s and base is not None:
            item += f" ({100 * (acc - base):+.1f} points against no defense)"
        items.append(item)
    return f"Final test accuracy: {', '.join(items)}" if items else ""


def scenario_sentence(s: ScenarioNumbers, baseline: ScenarioNumbers | None, server: str = "curious") -> str:
    """One scenario in plain words: what the attacks got, what the defense proves, what accuracy it costs, each
    on the federation it was measured on."""
    inv = inversion_phrase(s.inversion, explain=s.undefended) if s.inversion else ""
    attack = " and ".join(p for p in (inv, text_phrase(s.text) if s.text else "") if p)
    who = f"{article(server)} {server} server" if s.undefended else "the server"
    mia = membership_phrase(s.membership, explain=s.undefended) if s.membership else ""
    priv = privacy_phrase(s.privacy) if s.privacy else ""
    clauses = ([f"{who} {attack}"] if attack else []) + [p for p in (mia, priv) if p]
    head = "Without a defense" if s.undefended else f"With {s.defense}"
    first = f"{head}, " + "; ".join(clauses) if clauses else f"{head}, no attack result was recorded"
    sentences = [_sentence(first)]
    acc = _accuracy_sentence(s, baseline)
    if acc:
        sentences.append(_sentence(acc))
    if s.probe is not None:
        sentences.append(probe_sentence(s.probe))
    return " ".join(sentences)


def baseline_of(scenarios: list[ScenarioNumbers]) -> ScenarioNumbers | None:
    """The undefended scenario, the reference for every defense's accuracy cost."""
    return next((s for s in scenarios if s.undefended), None)


def compose_verdict(scenarios: list[ScenarioNumbers], server: str = "curious", violations: bool = True) -> list[str]:
    """One sentence group per scenario (the undefended one first), then (``violations``) any epsilon lower
    bound above the proven epsilon."""
    if not scenarios:
        return ["This run recorded no scenario, so there is nothing to conclude."]
    base = baseline_of(scenarios)
    ordered = ([base] if base else []) + [s for s in scenarios if s is not base]
    lines = [scenario_sentence(s, base, server) for s in ordered]
    if violations:
        lines += [m for s in ordered if (m := violation_message(s))]
    return lines


def audit_verdict(results: Any) -> list[str]:
    """The verdict of an audit results record (:class:`fedleak.results.AuditResults` or its dict)."""
    d = results.to_dict() if hasattr(results, "to_dict") else results
    server = ((d.get("setup") or {}).get("threat_model") or {}).get("server") or "curious"
    return compose_verdict([scenario_numbers(s) for s in d.get("scenarios") or []], server)
