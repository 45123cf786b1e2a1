"""The verdict in plain words, composed from the numbers when results.json carries none.

>>> from fedleak.report.measures import InversionNumbers, ScenarioNumbers
>>> inv = InversionNumbers(recovered=9, total=10, psnr_median=31.0, ssim_mean=0.9, label_accuracy=1.0,
...                        threshold_db=25.0)
>>> compose_verdict([ScenarioNumbers("none", 0.83, inv, None, None, None)])[0]
'Without a defense, a curious server rebuilt 9 of 10 client images (median PSNR 31.0 dB; rebuilt means PSNR \
above 25 dB). The final model reaches 83.0% test accuracy.'
"""

from __future__ import annotations

from fedleak.report.measures import (
    InversionNumbers,
    MembershipNumbers,
    PrivacyNumbers,
    ScenarioNumbers,
    TextNumbers,
)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def inversion_phrase(inv: InversionNumbers, explain: bool = False) -> str:
    """'rebuilt 9 of 10 client images (median PSNR 31.0 dB)', or what is known of it; ``explain`` adds what
    "rebuilt" means."""
    details = [f"median PSNR {inv.psnr_median:.1f} dB"] if inv.psnr_median is not None else []
    if inv.recovered is None or inv.total is None:
        return f"reached a {details[0]} on the client images" if details else ""
    if explain:
        details.append(f"rebuilt means PSNR above {inv.threshold_db:g} dB")
    note = f" ({'; '.join(details)})" if details else ""
    return f"rebuilt {inv.recovered} of {inv.total} client images{note}"


def membership_phrase(mia: MembershipNumbers, explain: bool = False) -> str:
    """'the strongest membership attack reaches AUC 0.71 (lira on ...) and TPR 8.0% at 1% FPR (...)';
    ``explain`` adds what guessing would reach."""
    parts = []
    if mia.auc is not None:
        parts.append(f"AUC {mia.auc:.2f} ({mia.auc_by})")
    if mia.tpr1 is not None:
        by = "" if mia.tpr1_by == mia.auc_by and mia.auc is not None else f" ({mia.tpr1_by})"
        parts.append(f"TPR {_pct(mia.tpr1)} at 1% FPR{by}")
    if not parts:
        return ""
    chance = " (guessing: AUC 0.50, TPR 1%)" if explain else ""
    return "the strongest membership attack reaches " + " and ".join(parts) + chance


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
    if priv.epsilon >= 1e300:  # infinity, as results.json stores it
        return "the accountant guarantees no finite ε"
    delta = f", δ = {priv.delta:g}" if priv.delta is not None else ""
    return f"the accountant guarantees ε = {priv.epsilon:.2f}{delta}"


def violation_message(s: ScenarioNumbers) -> str | None:
    """The loud warning for an empirical lower bound on epsilon above the proven epsilon, else None."""
    p = s.privacy
    if p is None or not p.violated:
        return None
    return (
        f"BUG: with {s.defense}, the measured lower bound ε ≥ {p.lower_bound:.2f} exceeds the ε = "
        f"{p.epsilon:.2f} the accountant proves. The DP implementation or its accounting is wrong: do not "
        "trust this ε until it is fixed."
    )


def article(word: str) -> str:
    """'a' or 'an' before ``word`` (an honest-but-curious server, a malicious server)."""
    return "an" if word.lower().startswith(("a", "e", "i", "o", "u", "honest", "hour")) else "a"


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def scenario_sentence(s: ScenarioNumbers, baseline: ScenarioNumbers | None, server: str = "curious") -> str:
    """One scenario in plain words: what the attacks got, what the defense proves, what accuracy it costs."""
    inv = inversion_phrase(s.inversion, explain=s.undefended) if s.inversion else ""
    attack = " and ".join(p for p in (inv, text_phrase(s.text) if s.text else "") if p)
    who = f"{article(server)} {server} server" if s.undefended else "the server"
    mia = membership_phrase(s.membership, explain=s.undefended) if s.membership else ""
    priv = privacy_phrase(s.privacy) if s.privacy else ""
    clauses = ([f"{who} {attack}"] if attack else []) + [p for p in (mia, priv) if p]
    head = "Without a defense" if s.undefended else f"With {s.defense}"
    first = f"{head}, " + "; ".join(clauses) if clauses else f"{head}, no attack result was recorded"
    sentences = [_sentence(first)]
    if s.accuracy is not None:
        acc = f"The final model reaches {_pct(s.accuracy)} test accuracy"
        if baseline is not None and baseline is not s and baseline.accuracy is not None:
            cost = 100 * (s.accuracy - baseline.accuracy)
            acc += f" ({cost:+.1f} percentage points against no defense)"
        sentences.append(_sentence(acc))
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
