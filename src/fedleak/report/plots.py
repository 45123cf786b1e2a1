"""Plots the report draws itself from numbers (matplotlib's Agg canvas, no pyplot state): the privacy-utility
trade-off, accuracy per round, and a log-log ROC when a run folder lacks its picture. Each returns PNG bytes,
or None when there is nothing to draw."""

from __future__ import annotations

import io
import statistics
from collections.abc import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from fedleak.report.measures import ScenarioNumbers, as_list, number

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf", "#bcbd22")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", "-.", (0, (1, 1)))


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


def _psnr(s: ScenarioNumbers) -> tuple[float | None, float | None]:
    """(accuracy, median PSNR) of the main federation: the model whose clients' updates were inverted."""
    return s.accuracy, (s.inversion.psnr_median if s.inversion else None)


def _auc(s: ScenarioNumbers) -> tuple[float | None, float | None]:
    """(accuracy, best AUC) of the model membership attacked: its own federation's accuracy."""
    acc = s.membership_accuracy if s.membership_accuracy is not None else s.accuracy
    return acc, (s.membership.auc if s.membership else None)


def _tokens(s: ScenarioNumbers) -> tuple[float | None, float | None]:
    return s.accuracy, (s.text.token_accuracy_median if s.text else None)


def _inv_federation(rows: Sequence[ScenarioNumbers]) -> str:
    return next((s.federation for s in rows if s.federation), "")


def _mia_federation(rows: Sequence[ScenarioNumbers]) -> str:
    return next((s.membership.federation for s in rows if s.membership and s.membership.federation), "")


# (title, y label, (accuracy, value) of a scenario, reference line and its words, federation named)
PANELS = (
    ("Gradient inversion", "median PSNR (dB)", _psnr, "baseline", _inv_federation),
    ("Membership inference", "best attack AUC", _auc, "coin flip", _mia_federation),
    ("Text recovery", "median token accuracy", _tokens, "", lambda rows: ""),
)


def privacy_utility_png(rows: Sequence[ScenarioNumbers]) -> bytes | None:
    """Attack success against the test accuracy of the same model, one point per defense (same colour and
    marker in every panel, named in one legend): median PSNR against the accuracy of the federation whose
    updates were inverted, best membership AUC against the accuracy of the model membership attacked. A panel
    only where some scenario has both numbers. Up is more leakage, right is more utility."""
    points = []
    for _, _, get, _, _ in PANELS:
        pts = []
        for i, s in enumerate(rows):
            acc, y = get(s)
            if acc is not None and y is not None:
                pts.append((100 * acc, y, i, s.defense))
        points.append(pts)
    drawn = [(panel, pts) for panel, pts in zip(PANELS, points, strict=True) if pts]
    if not drawn:
        return None
    fig = _figure(4.4 * len(drawn), 4.4, len(drawn))
    fig.subplots_adjust(bottom=1.25 / 4.4, top=1 - 0.6 / 4.4)
    axes = fig.subplots(1, len(drawn), squeeze=False)[0]
    handles = {}
    for ax, ((title, ylabel, _, ref_words, fed), pts) in zip(axes, drawn, strict=True):
        for x, y, i, name in pts:
            h = ax.scatter([x], [y], s=70, color=COLORS[i % len(COLORS)], marker=MARKERS[i % len(MARKERS)], zorder=3)
            handles.setdefault(name, h)
        ref = None
        if ref_words == "baseline":
            base = [s.inversion.baseline_psnr_median for s in rows if s.inversion and s.inversion.baseline_psnr_median]
            ref = statistics.median(base) if base else None
        elif ref_words == "coin flip":
            ref = 0.5
        if ref is not None:
            ax.axhline(ref, color="#888", linestyle="--", linewidth=1)
            words = f"blank image: {ref:.1f} dB" if ref_words == "baseline" else ref_words
            ax.annotate(
                words,
                (0, ref),
                xycoords=("axes fraction", "data"),
                xytext=(3, 3),
                textcoords="offset points",
                fontsize=8,
                color="#666",
            )
        xs = [x for x, *_ in pts]
        lo, hi = min(xs), max(xs)
        pad = max(2.0, 0.15 * (hi - lo))
        ax.set_xlim(max(0.0, lo - pad), min(100.0, hi + pad))
        ax.margins(y=0.25)
        where = fed(rows)
        ax.set_title(title + (f"\n{where}" if where else ""), fontsize=10)
        ax.set_xlabel("final test accuracy of that model (%)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    fig.legend(
        list(handles.values()), list(handles), loc="lower center", ncol=min(4, len(handles)), fontsize=8, frameon=False
    )
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


def roc_png(curves: Sequence[tuple], title: str = "") -> bytes | None:
    """A log-log ROC curve per attack from (name, fpr, tpr[, auc]) tuples, the AUC in the legend; colours and
    line styles cycle so that up to 40 curves stay distinguishable; the diagonal is chance."""
    usable = []
    for name, fpr, tpr, *rest in curves:
        pairs = [(number(x), number(y)) for x, y in zip(as_list(fpr), as_list(tpr), strict=False)]
        pts = [(x, y) for x, y in pairs if x is not None and y is not None and x > 0 and y > 0]
        a = number(rest[0]) if rest else None
        if len(pts) >= 2:
            usable.append((name if a is None else f"{name} (AUC {a:.3f})", pts))
    if not usable:
        return None
    lo = min(min(x for x, _ in pts) for _, pts in usable)
    fig = _figure(5.0, 4.6)
    ax = fig.subplots()
    for i, (name, pts) in enumerate(usable):
        style = LINESTYLES[(i // len(COLORS)) % len(LINESTYLES)]
        ax.plot(*zip(*pts, strict=True), color=COLORS[i % len(COLORS)], linestyle=style, label=name)
    ax.plot([lo, 1], [lo, 1], color="#888", linestyle=":", linewidth=1, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title or "ROC (log-log)", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")
    return _png(fig)


SWEEP_PANELS = (  # (column of attack success, axis label, column of the accuracy of the model it measured)
    ("psnr_median", "inversion: median PSNR (dB)", "utility"),
    ("tpr_at_fpr_0.01", "membership: TPR at 1% FPR", "mia_target_accuracy"),
)


def sweep_png(rows: Sequence[dict]) -> bytes:
    """A sweep's attack success (y) against the test accuracy of the very model each figure was measured on (x),
    one curve per defense family, the undefended run as a star."""
    panels = [p for p in SWEEP_PANELS if any(number(r.get(p[0])) is not None for r in rows)]
    fig = _figure(5.2 * max(1, len(panels)), 4.4, max(1, len(panels)))
    fig.subplots_adjust(top=1 - 0.7 / 4.4)
    axes = fig.subplots(1, max(1, len(panels)), squeeze=False)[0]
    for ax, (col, label, xcol) in zip(axes, panels or [("", "", "")], strict=False):
        families = list(dict.fromkeys(str(r.get("family")) for r in rows))
        for k, fam in enumerate(families):
            pts = [
                r for r in rows if str(r.get("family")) == fam and None not in (number(r.get(col)), number(r.get(xcol)))
            ]
            if not pts:
                continue
            xs, ys = [100 * float(r[xcol]) for r in pts], [float(r[col]) for r in pts]
            if fam == "none":
                ax.scatter(xs, ys, marker="*", s=180, color="black", label="undefended", zorder=3)
                continue
            color = COLORS[k % len(COLORS)]
            ax.plot(xs, ys, marker=MARKERS[k % len(MARKERS)], color=color, label=fam)
            for r, x, y in zip(pts, xs, ys, strict=True):
                ax.annotate(
                    str(r.get("defense")).partition(":")[2] or str(r.get("defense")),
                    (x, y),
                    fontsize=7,
                    xytext=(3, 3),
                    textcoords="offset points",
                    color=color,
                )
        xname = (
            "test accuracy of the defended training (%)"
            if xcol == "utility"
            else "test accuracy of the attacked target (%)"
        )
        ax.set_xlabel(xname)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle("privacy-utility trade-off (lower-right is better)", fontsize=11)
    return _png(fig)
