"""Rendering: one jinja2 environment with autoescape on for every template (every string that comes from
results.json or the config is escaped), and the filters that format numbers the same way everywhere."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from fedleak.report.measures import number

TEMPLATES = Path(__file__).parent / "templates"
DASH = "—"


INFINITE = 1e300  # results.json stores infinity as +-1e308 (JSON has no inf)


def fmt_num(x: Any, digits: int = 2) -> str:
    """A number with ``digits`` decimals; a string as is; a dash for a missing value; ∞ for infinity."""
    v = number(x)
    if v is not None and abs(v) >= INFINITE:
        return "∞" if v > 0 else "-∞"
    if v is not None:
        return f"{v:.{digits}f}"
    return x if isinstance(x, str) and x else DASH


def fmt_pct(x: Any, digits: int = 1) -> str:
    """A rate in [0, 1] as a percentage."""
    v = number(x)
    return f"{100 * v:.{digits}f}%" if v is not None else fmt_num(x)


def fmt_db(x: Any) -> str:
    v = number(x)
    return f"{v:.1f} dB" if v is not None else fmt_num(x)


def fmt_sci(x: Any) -> str:
    """Small numbers (MSE, delta) in short scientific notation."""
    v = number(x)
    return f"{v:.2g}" if v is not None and abs(v) < INFINITE else fmt_num(x)


def fmt_auto(x: Any) -> str:
    """A number of unknown scale with 4 significant digits (83.42, 2.086e-09, 1)."""
    v = number(x)
    return f"{v:.4g}" if v is not None and abs(v) < INFINITE else fmt_num(x)


def show(x: Any) -> str:
    """Any JSON value in words: lists joined by commas, dicts as 'key: value', a dash for null."""
    if x is None or x == "" or x == [] or x == {}:
        return DASH
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:g}"
    if isinstance(x, list):
        return ", ".join(show(v) for v in x)
    if isinstance(x, dict):
        return "; ".join(f"{k}: {show(v)}" for k, v in x.items())
    return str(x)


def pretty_json(x: Any) -> str:
    return json.dumps(x, indent=2, ensure_ascii=False, default=str)


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        num=fmt_num, pct=fmt_pct, db=fmt_db, sci=fmt_sci, auto=fmt_auto, show=show, pretty_json=pretty_json
    )
    return env


def render(template: str, context: dict[str, Any]) -> str:
    """Render ``templates/<template>`` with ``context``."""
    return environment().get_template(template).render(**context)
