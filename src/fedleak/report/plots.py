"""Plots the report draws itself from numbers (matplotlib's Agg canvas, no pyplot state): the privacy-utility
trade-off, accuracy per round, and a log-log ROC when a run folder lacks its picture. Each returns PNG bytes,
or None when there is nothing to draw."""

from __future__ import annotations

import io
from collections.abc import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from fedleak.report.measures import ScenarioNumbers, as_list, number

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf")


def _figure(width: float, height: float, panels: int = 1) -> Figure:
    """A figure with fixed margins in inches (constrained layout would draw everything twice)."""
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(
        left=0.8 / width,
        right=1 - 0.25 / width,
        bottom=0.7 / height,
        top=1 - 0.45 / height,
        wspace=0.32 if panels > 1 else 0.2,
    )
    return fig


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def _psnr(s: ScenarioNumbers) -> float | None:
    return s.inversion.psnr_median if s.inversion else None


def _auc(s: ScenarioNumbers) -> float | None:
    return s.membership.auc if s.membership else None


def _tokens(s: ScenarioNumbers) -> float | None:
    return s.text.token_accuracy_median if s.text else None


# (title, y label, value of a scenario, reference line and its words)
PANELS = (
    ("Gradient inversion", "median PSNR (dB)", _psnr, "rebuilt"),
    ("Membership inference", "best attack AUC", _auc, "coin flip"),
    ("Text recovery", "median token accuracy", _tokens, ""),
)


def privacy_utility_png(rows: Sequence[ScenarioNumbers]) -> bytes | None:
    """Attack success against test accuracy, one point per defense (same colour in every panel): median PSNR
    of the rebuilt images, best membership AUC, text token accuracy; a panel only where some scenario has
    both numbers. Up is more leakage, right is more utility."""
    points = [
        [
            (100 * s.accuracy, y, i, s.defense)
            for i, s in enumerate(rows)
            if s.accuracy is not None and (y := get(s)) is not None
        ]
        for _, _, get, _ in PANELS
    ]
    drawn = [(panel, pts) for panel, pts in zip(PANELS, points, strict=True) if pts]
    if not drawn:
        return None
    xs = [x for _, pts in drawn for x, *_ in pts]
    pad = max(2.0, 0.15 * (max(xs) - min(xs)))
    fig = _figure(4.4 * len(drawn), 3.8, len(drawn))
    axes = fig.subplots(1, len(drawn), squeeze=False)[0]
    for ax, ((title, ylabel, _, ref_words), pts) in zip(axes, drawn, strict=True):
        for x, y, i, name in pts:
            ax.scatter([x], [y], s=70, color=COLORS[i % len(COLORS)], zorder=3)
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(6, 5), fontsize=9)
        ref = {
            "rebuilt": next((s.inversion.threshold_db for s in rows if s.inversion), None),
            "coin flip": 0.5,
        }.get(ref_words)
        if ref is not None:
            ax.axhline(ref, color="#888", linestyle="--", linewidth=1)
            ax.annotate(
                f"rebuilt: PSNR > {ref:g} dB" if ref_words == "rebuilt" else ref_words,
                (0, ref),
                xycoords=("axes fraction", "data"),
                xytext=(3, 3),
                textcoords="offset points",
                fontsize=8,
                color="#666",
            )
        ax.set_xlim(min(xs) - pad, max(xs) + 3 * pad)  # room for the names on the right
        ax.margins(y=0.25)
        ax.set_title(title, fontsize=11)
        ax.set_xlabel("final test accuracy (%)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    return _png(fig)


def accuracy_png(series: Sequence[tuple[str, list[dict]]]) -> bytes | None:
    """Test accuracy per round, one line per defense; ``series`` holds (defense, training rounds)."""
    lines = []
    for name, rounds in series:
        pts = [(number(r.get("round")), number(r.get("test_accuracy"))) for r in as_list(rounds) if isinstance(r, dict)]
        pts = [(x, y) for x, y in pts if x is not None and y is not None]
        if pts:
            lines.append((name, pts))
    if not lines:
        return None
    fig = _figure(6.4, 3.6)
    ax = fig.subplots()
    for i, (name, pts) in enumerate(lines):
        xs, ys = zip(*sorted(pts), strict=True)
        ax.plot(xs, [100 * y for y in ys], marker="o", color=COLORS[i % len(COLORS)], label=name)
    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Accuracy of the global model per round", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def roc_png(curves: Sequence[tuple[str, list, list]], title: str = "") -> bytes | None:
    """A log-log ROC curve per attack from (name, fpr, tpr) lists; the diagonal is chance."""
    usable = []
    for name, fpr, tpr in curves:
        pairs = [(number(x), number(y)) for x, y in zip(as_list(fpr), as_list(tpr), strict=False)]
        pts = [(x, y) for x, y in pairs if x is not None and y is not None and x > 0 and y > 0]
        if len(pts) >= 2:
            usable.append((name, pts))
    if not usable:
        return None
    lo = min(min(x for x, _ in pts) for _, pts in usable)
    fig = _figure(4.6, 4.2)
    ax = fig.subplots()
    for i, (name, pts) in enumerate(usable):
        ax.plot(*zip(*pts, strict=True), color=COLORS[i % len(COLORS)], label=name)
    ax.plot([lo, 1], [lo, 1], color="#888", linestyle="--", linewidth=1, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title or "ROC (log-log)", fontsize=11)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig)
