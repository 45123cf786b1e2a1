"""Turn a run folder (``results.json`` and the PNGs beside it) into one self-contained ``report.html``.

The report reads results only: it imports no torch, and any key of results.json may be missing (its section
then says so or is left out). Every picture is embedded as a ``data:image/png;base64`` URI, every string
from the results is HTML-escaped, and a Content-Security-Policy forbids scripts and outside requests::

    from fedleak.report import build_report
    path = build_report(Path("runs/demo"))          # runs/demo/report.html

Pages by ``kind``: "audit" (verdict, setup, reconstructions, membership, defenses, what the numbers mean),
and simpler pages of the same style for "inversion", "membership" and "sweep".
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedleak.report.audit_page import audit_context
from fedleak.report.html import render
from fedleak.report.load import load_results
from fedleak.report.single_page import dp_audit_context, inversion_context, membership_context, sweep_context
from fedleak.runio import atomic_write_text

__all__ = ["PAGES", "build_report", "render_report"]

PAGES: dict[str, tuple[str, Callable[[dict, Path], dict[str, Any]]]] = {
    "audit": ("audit.html.j2", audit_context),
    "inversion": ("single.html.j2", inversion_context),
    "membership": ("single.html.j2", membership_context),
    "sweep": ("single.html.j2", sweep_context),
    "dp_audit": ("single.html.j2", dp_audit_context),
}
"""kind -> (template, context builder)."""


def _folder(path: Path) -> Path:
    """The run folder, also when the path names its results.json."""
    path = Path(path)
    return path.parent if path.name == "results.json" and path.is_file() else path


def render_report(run_dir: Path) -> str:
    """The report of ``run_dir`` (or of the folder of a results.json named directly) as an HTML string;
    FedleakInputError when the folder has no usable results.json."""
    run_dir = _folder(run_dir)
    results = load_results(run_dir, tuple(PAGES))
    template, context = PAGES[results["kind"]]
    return render(template, context(results, run_dir))


def build_report(run_dir: Path, out: Path | None = None) -> Path:
    """Write the report of ``run_dir`` to ``out`` (default ``run_dir/report.html``; a folder gets
    ``report.html`` inside it), atomically, and return its path."""
    run_dir = _folder(run_dir)
    html = render_report(run_dir)
    if out is None:
        out = Path(run_dir) / "report.html"
    elif Path(out).is_dir():
        out = Path(out) / "report.html"
    return atomic_write_text(out, html)
