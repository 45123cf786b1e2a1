"""Plots the report draws itself from numbers (matplotlib's Agg canvas, no pyplot state): the privacy-utility
trade-off, accuracy per round, and a log-log ROC when a run folder lacks its picture. Each returns PNG bytes,
or None when there is nothing to draw."""

from __future__ import annotations

import io
from collections.abc import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

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


def privacy_utility_png(rows: Sequence[ScenarioNumbers]) -> bytes | None:
    """Attack success against test accuracy, one point per defense: median PSNR of the rebuilt images, best
    membership AUC, and text token accuracy (each panel only where some scenario has the number)."""
    panels = [
        (
            "Gradient inversion",
            "median PSNR (dB)",
            lambda s: s.inversion and s.inversion.psnr_median,
            lambda s: s.inversion and s.inversion.threshold_db,
            "rebuilt above",
        ),
        (
            "Membership inference",
            "best attack AUC",
            lambda s: s.membership and s.membership.auc,
            lambda s: 0.5,
            "chance",
        ),
        (
            "Text recovery",
            "median token accuracy",
            lambda s: s.text and s.text.token_accuracy_median,
            lambda s: None,
            "",
        ),
    ]
    drawn = [p for p in panels if any(s.accuracy is not None and p[2](s) is not None for s in rows)]
    if not drawn:
        return None
    fig = _figure(4.4 * len(drawn), 3.8, len(drawn))
    for ax, (title, ylabel, get, ref, ref_label) in zip(
        fig.subplots(1, len(drawn), squeeze=False)[0], drawn, strict=True
    ):
        for i, s in enumerate(rows):
            y = get(s)
            if s.accuracy is None or y is None:
                continue
            x = 100 * s.accuracy
            ax.scatter([x], [y], s=70, color=COLORS[i % len(COLORS)], label=s.defense, zorder=3)
            ax.annotate(s.defense, (x, y), textcoords="offset points", xytext=(6, 5), fontsize=9)
        refs = {r for s in rows if (r := ref(s)) is not None}
        for r in sorted(refs)[:1]:
            ax.axhline(r, color="#888", linestyle="--", linewidth=1, label=f"{ref_label} {r:g}")
        ax.set_title(title, fontsize=11)
        ax.set_xlabel("final test accuracy (%)  → more useful")
        ax.set_ylabel(f"{ylabel}  → more leakage")
        ax.grid(alpha=0.3)
        ax.margins(x=0.25, y=0.2)
    handles, labels = fig.axes[0].get_legend_handles_labels()
    fig.axes[-1].legend(handles, labels, fontsize=8, loc="best")
    return _png(fig)


def accuracy_png(series: Sequence[tuple[str, list[dict]]]) -> bytes | None:
    """Test accuracy per round, one line per defense; ``series`` holds (defense, training rounds)."""
    lines = []
    for name, rounds in series:
        pts = [
            (number(r.get("round")), number(r.get("test_accuracy")))
            for r in as_list(rounds)
            if isinstance(r, dict)
        ]
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
