"""File-name slugs for scenarios (one place, used by the pipeline, the stages and the sweep)."""

from __future__ import annotations

import re


def scenario_slug(defense: str) -> str:
    """'dp-sgd:epsilon=8,delta=1e-5' -> 'dp-sgd-epsilon-8-delta-1e-5'; 'none' stays."""
    return re.sub(r"[^A-Za-z0-9]+", "-", defense).strip("-") or "none"
