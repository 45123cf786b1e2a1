"""The ``privacy`` block of a run's results: what the defenses promise (the accountant's epsilon) beside what
an attack proves (empirical lower bounds from its membership scores).

    >>> import numpy as np
    >>> from fedleak.defenses import plan
    >>> member = np.arange(400) < 200
    >>> scores = member + np.random.default_rng(0).normal(0, 0.5, 400)    # a leaky, undefended model
    >>> block = privacy_block(plan([]), scores, member)
    >>> block["epsilon"] is None, block["epsilon_lower_bound"] > 0
    (True, True)
"""

from __future__ import annotations

from typing import Any

import numpy as np


def privacy_block(
    defense_plan: Any,
    scores: Any = None,
    is_member: Any = None,
    *,
    delta: float | None = None,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """``defense_plan.privacy()`` plus, given membership ``scores`` (higher = member) and the truth,
    ``epsilon_lower_bound`` (Clopper-Pearson, Jagielski et al. 2020), its details, the one-run bound
    (Steinke et al. 2023) and ``bound_exceeds_epsilon`` (a loud warning when true).

    Without a DP defense the bounds are taken at ``delta`` (default 1e-5), and that delta is reported.
    """
    from fedleak.metrics.privacy import audit_privacy

    block = dict(defense_plan.privacy())
    if scores is None or is_member is None:
        return block
    s = np.asarray(_plain(scores), dtype=float).reshape(-1)
    m = np.asarray(_plain(is_member), dtype=bool).reshape(-1)
    d = block.get("delta") if block.get("delta") is not None else (delta if delta is not None else 1e-5)
    if block.get("delta") is None:
        block["delta"] = d
    block.update(audit_privacy(s, m, block.get("epsilon"), d, confidence, seed))
    return block


def _plain(x: Any) -> Any:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else x
