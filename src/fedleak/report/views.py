"""Views: the pieces of results.json a template shows (an inversion case, a text case, a membership entry),
normalised so that a template never meets a missing key or a value of the wrong type, with their pictures
read from the run folder (or drawn from the numbers when the picture is absent)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedleak.report.load import picture, png_data_uri
from fedleak.report.measures import (
    AttackRow,
    as_dict,
    as_list,
    attack_rows,
    case_recovered,
    number,
    roc_points,
    text,
)
from fedleak.report.plots import roc_png


@dataclass(frozen=True)
class Picture:
    """An embedded picture, or the name of the file that was expected and not found."""

    uri: str | None
    name: str
    drawn: bool = False  # drawn by the report from the numbers, not read from the run folder


def load_picture(run_dir: Path, name: Any, default: str = "") -> Picture:
    name = name if isinstance(name, str) and name else default
    return Picture(picture(run_dir, name) if name else None, name)


@dataclass(frozen=True)
class TargetRow:
    index: str
    client: str
    label: str
    recovered_label: str
    label_ok: bool | None
    psnr: float | None
    ssim: float | None
    mse: float | None
    recovered: bool | None  # the target's own ``rebuilt`` (the one rule)
    baseline_psnr: float | None = None


@dataclass(frozen=True)
class RealismView:
    """The realism card of a figure, as (label, value) rows, and the anchor its figures link to."""

    anchor: str
    rows: list[tuple[str, str]]
    beyond: list[str]


def realism_view(card: Any, anchor: str) -> RealismView | None:
    c = as_dict(card)
    if not c:
        return None
    kind = text(c.get("received"))
    sent = text(c.get("update")) == "sent"
    received = {"gradient": "one gradient (FedSGD)", "delta": "a model delta w1 - w0 (FedAvg)"}.get(kind, kind or "—")
    rows = [
        ("Update", "as the client sent it" if sent else "a probe computed by the audit, not sent by any client"),
        ("The server received", received),
    ]
    n = c.get("records_per_update")
    if n is not None:
        rows.append(("Records behind one update", text(n)))
    if kind == "delta":
        local = [
            f"{text(c.get('local_steps'))} local step(s)" if c.get("local_steps") is not None else "",
            f"{text(c.get('local_epochs'))} epoch(s)" if c.get("local_epochs") is not None else "",
            f"mini-batch {text(c.get('local_batch_size'))}" if c.get("local_batch_size") is not None else "",
        ]
        rows.append(("Local training", ", ".join(x for x in local if x) or "—"))
    nc = number(c.get("num_clients"))
    if nc is not None and nc > 1:
        rows.append(("Secure aggregation", f"the server saw only the sum of {int(nc)} clients' updates"))
    granted = as_list(c.get("granted"))
    rows.append(("Granted to the server", ", ".join(text(g) for g in granted) or "nothing beyond the update"))
    mode = text(c.get("model_mode"))
    rows.append(
        (
            "Model mode",
            {"train": "train mode (BatchNorm uses batch statistics)", "eval": "eval mode"}.get(mode, mode or "—"),
        )
    )
    bn = c.get("bn_prior")
    if isinstance(bn, bool):
        rows.append(("BatchNorm statistics as a prior", "used" if bn else "not used"))
    if text(c.get("identifiable")):
        rows.append(("What the update can determine", text(c.get("identifiable"))))
    beyond = [text(b) for b in as_list(c.get("beyond_server")) if text(b)]
    return RealismView(anchor=anchor, rows=rows, beyond=beyond)


@dataclass(frozen=True)
class InversionView:
    title: str
    subtitle: str
    picture: Picture
    recovered: int | None
    total: int | None
    summary: dict[str, Any]
    targets: list[TargetRow] = field(default_factory=list)
    skipped: str = ""  # why the attack did not run, when it did not
    extra: list[tuple[str, float]] = field(default_factory=list)  # other numbers of the summary
    update: str = ""  # "sent" or "probe"
    note: str = ""
    realism: RealismView | None = None
    status: str = "done"  # done, not applicable, failed

    @property
    def caption(self) -> str:
        """What the picture shows: originals over reconstructions, or (nothing scored) the output alone."""
        if self.targets:
            return (
                "Top: the client's images; below: the attack's output, with the PSNR of each (✓: rebuilt by the rule)."
            )
        return "The attack's output alone: no originals were handed over to compare it with, so nothing is scored."

    @property
    def has_clients(self) -> bool:
        return any(t.client != "—" for t in self.targets)


def target_row(t: dict) -> TargetRow:
    label, guess = t.get("label"), t.get("recovered_label")
    psnr = number(t.get("psnr"))
    rebuilt = t.get("rebuilt")
    return TargetRow(
        index=text(t.get("index"), "—"),
        client=text(t.get("client"), "—"),
        label=text(label, "—"),
        recovered_label=text(guess, "—"),
        label_ok=None if label is None or guess is None else label == guess,
        psnr=psnr,
        ssim=number(t.get("ssim")),
        mse=number(t.get("mse")),
        recovered=rebuilt if isinstance(rebuilt, bool) else None,
        baseline_psnr=number(t.get("baseline_psnr")),
    )


def case_origin(case: dict) -> str:
    """'round 1, client 3, gradient update of 1 client': where the attacked update came from."""
    clients = as_list(case.get("clients"))
    parts = [
        f"round {text(case['round'])}" if "round" in case else "",
        f"client {text(case['client'])}" if "client" in case else "",
        f"client{'s' if len(clients) > 1 else ''} {', '.join(text(c) for c in clients)}" if clients else "",
    ]
    card = as_dict(case.get("realism"))
    kind, n = text(card.get("received") or case.get("update_kind")), number(card.get("num_clients"))
    if kind:
        parts.append(f"{kind} update" + (f" of {int(n)} client{'s' if n != 1 else ''}" if n is not None else ""))
    return ", ".join(p for p in parts if p)


SUMMARY_SHOWN = {
    "psnr_median",
    "psnr_mean",
    "ssim_mean",
    "label_accuracy",
    "seconds_total",
    "rebuilt",
    "total",
    "baseline_psnr_median",
}


def inversion_view(case: Any, run_dir: Path, default_picture: str = "", anchor: str = "") -> InversionView:
    """One inversion entry: the attack, where its update came from (sent or probe), its realism card, the
    picture and a row per target."""
    case = as_dict(case)
    rec, tot = case_recovered(case)
    status = text(case.get("status"), "done")
    return InversionView(
        title=text(case.get("attack"), "inversion"),
        subtitle=case_origin(case),
        picture=load_picture(run_dir, case.get("image"), default_picture),
        recovered=rec,
        total=tot,
        summary=as_dict(case.get("summary")),
        targets=[target_row(as_dict(t)) for t in as_list(case.get("targets"))],
        skipped=text(case.get("note")) if status != "done" else "",
        extra=summary_extras(case.get("summary"), SUMMARY_SHOWN),
        update=text(case.get("update")),
        note=text(case.get("note")) if status == "done" else "",
        realism=realism_view(case.get("realism"), anchor),
        status=status,
    )


@dataclass(frozen=True)
class TextRow:
    text: str
    recovered_text: str
    token_accuracy: float | None


@dataclass(frozen=True)
class TextView:
    title: str
    summary: dict[str, Any]
    targets: list[TextRow]
    extra: list[tuple[str, float]] = field(default_factory=list)  # other numbers of the summary


TEXT_SUMMARY_SHOWN = {"token_accuracy_median", "exact_match_rate", "rouge_l_mean"}


def summary_extras(summary: Any, shown: set[str]) -> list[tuple[str, float]]:
    """(name, value) for the numbers of a summary that the page does not show by name."""
    return [
        (str(k).replace("_", " "), x)
        for k, v in as_dict(summary).items()
        if k not in shown and (x := number(v)) is not None
    ]


def text_view(case: Any) -> TextView:
    case = as_dict(case)
    targets = map(as_dict, as_list(case.get("targets")))
    rows = [
        TextRow(text(t.get("text"), "—"), text(t.get("recovered_text"), "—"), number(t.get("token_accuracy")))
        for t in targets
    ]
    summary = as_dict(case.get("summary"))
    return TextView(text(case.get("attack"), "text"), summary, rows, summary_extras(summary, TEXT_SUMMARY_SHOWN))


@dataclass(frozen=True)
class MembershipView:
    title: str
    picture: Picture
    rows: list[AttackRow]
    train_accuracy: float | None
    test_accuracy: float | None
    federation: str = ""
    realism: RealismView | None = None
    exposed: list[dict] = field(default_factory=list)
    exposed_picture: Picture | None = None
    exposed_fpr: float | None = None


def membership_view(entry: Any, run_dir: Path, default_picture: str = "") -> MembershipView:
    """One target model under membership attacks: the ROC picture (drawn from the numbers when the file is
    missing), a row per attack, and the target's train/test accuracy (the generalisation gap)."""
    entry = as_dict(entry)
    title = text(entry.get("description")) or text(entry.get("target"), "target model")
    pic = load_picture(run_dir, entry.get("image"), default_picture)
    rows = attack_rows(entry)
    if pic.uri is None:
        attacks = as_dict(entry.get("attacks"))
        aucs = {r.attack: r.auc for r in rows}
        curves = [(str(k), *roc_points(a), aucs.get(str(k))) for k, a in attacks.items()]
        drawn = roc_png(curves, title=f"ROC: {text(entry.get('target'), 'target')}")
        if drawn is not None:
            pic = Picture(png_data_uri(drawn), pic.name, drawn=True)
    fed = as_dict(entry.get("federation"))
    target = as_dict(entry.get("target"))  # a `fedleak mia` run: {"train_accuracy", "test_accuracy"}
    return MembershipView(
        title=title,
        picture=pic,
        rows=rows,
        train_accuracy=number(entry.get("train_accuracy") if not target else target.get("train_accuracy")),
        test_accuracy=number(fed.get("test_accuracy") if not target else target.get("test_accuracy")),
        federation=text(fed.get("name")),
        realism=realism_view(entry.get("realism"), ""),
        exposed=[as_dict(x) for x in as_list(entry.get("exposed"))],
        exposed_picture=load_picture(run_dir, entry.get("exposed_image")) if entry.get("exposed_image") else None,
        exposed_fpr=number(as_dict(entry.get("exposed_threshold")).get("fpr")),
    )
