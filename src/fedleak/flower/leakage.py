"""What a client can check before it sends its update, with torch alone (no Flower): the detectors behind the
:func:`fedleak.flower.guard.leakage_guard` client mod, testable on plain state dicts.

(a) :func:`inspect_global_model`: does the model the server sent carry a malicious-server construction?
    - duplicated rows (or columns) in a weight matrix: an imprint layer's rows all equal one measurement (each
      unit a brightness bin, Fowl et al. 2022), its read-back layer's columns all equal one vector; a honest
      initialisation or training never makes two rows of a layer parallel;
    - trap weights (Boenisch et al. 2023): rows whose negative entries outweigh the positive ones, so that each
      unit fires for few records; honest rows are balanced;
    - sparse rows: rows that are mostly exact zeros, each reading a few inputs.
(b) :func:`update_exposure`: how readable the client's own update is through each linear layer with a bias:
    - exact read-out: a weight gradient of rank one with a nonzero bias gradient is ``x * g_b``, so
      ``g_W[i] / g_b[i]`` is the record itself (one record, or one record per active unit);
    - within reach of SPEAR (Dimitrov et al. 2024): a ReLU layer's weight gradient of low rank ``r`` (the batch
      size) with zero rows is solved exactly for batches up to about ``SPEAR_REACH`` records.

    >>> import torch
    >>> honest = {"fc.weight": torch.randn(32, 64) / 8, "fc.bias": torch.zeros(32)}
    >>> inspect_global_model(honest)
    []
    >>> x = torch.rand(64)
    >>> grad = {"fc.weight": torch.outer(torch.ones(32), x), "fc.bias": torch.ones(32)}
    >>> [(e.layer, e.kind, e.exact) for e in update_exposure(grad)]
    [('fc', 'linear read-out', True)]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

DUPLICATE_COSINE = 0.999  # two rows this parallel are copies (random rows of length >= 8 are near 0)
DUPLICATE_FRACTION = 0.25  # a layer is flagged when at least this share of its rows copy another row
TRAP_RATIO = 1.5  # median |sum of negative entries| / sum of positive entries of the rows; honest rows: about 1
SPARSE_ZERO_FRACTION = 0.9  # a row this full of exact zeros reads only a few inputs
SPARSE_ROW_FRACTION = 0.25  # ... flagged when at least this share of the rows are so
RANK_TOL = 1e-5  # singular values below this fraction of the largest count as zero
SPEAR_REACH = 25  # batch sizes (gradient ranks) that SPEAR's exact solver reaches in practice


@dataclass
class Construction:
    """A malicious construction found in the received model."""

    layer: str
    kind: str  # "duplicated rows", "duplicated columns", "trap weights", "sparse rows"
    fraction: float  # share of the rows (columns) concerned, or the median trap ratio
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Exposure:
    """How a layer of the client's own update gives its records away."""

    layer: str
    kind: str  # "linear read-out" or "spear"
    exact: bool  # the read-out is a record itself (rank one), or the batch is within SPEAR's reach
    rank: int
    zero_rows: float  # share of weight-gradient rows that are exactly zero (inactive ReLU units)
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def linear_layers(state: dict[str, Tensor]) -> dict[str, tuple[Tensor, Tensor | None]]:
    """Layer prefix -> (2-D weight, bias or None), for every ``*.weight`` of two dimensions."""
    out = {}
    for k, w in state.items():
        if k.endswith("weight") and w.dim() == 2 and w.is_floating_point():
            prefix = k[: -len("weight")].rstrip(".")
            b = state.get(f"{prefix}.bias" if prefix else "bias")
            out[prefix] = (w.detach().double(), None if b is None else b.detach().double())
    return out


def _duplicated_share(rows: Tensor) -> float:
    """Share of rows (length >= 2, nonzero) parallel to some other row."""
    norms = rows.norm(dim=1)
    live = rows[norms > 0]
    if len(live) < 2 or rows.shape[1] < 2:
        return 0.0
    unit = live / live.norm(dim=1, keepdim=True)
    cos = unit @ unit.T
    cos.fill_diagonal_(0.0)
    return float((cos.max(dim=1).values > DUPLICATE_COSINE).double().mean())


def inspect_global_model(state: dict[str, Tensor]) -> list[Construction]:
    """The malicious constructions in ``state`` (the global model as received); empty for a honest model."""
    found: list[Construction] = []
    for name, (w, _b) in linear_layers(state).items():
        if w.shape[0] >= 2 and w.shape[1] >= 8:
            share = _duplicated_share(w)
            if share >= DUPLICATE_FRACTION:
                found.append(
                    Construction(
                        name,
                        "duplicated rows",
                        share,
                        f"{share:.0%} of {w.shape[0]} units read the same direction (imprint bins)",
                    )
                )
        if w.shape[1] >= 2 and w.shape[0] >= 8:
            share = _duplicated_share(w.T)
            if share >= DUPLICATE_FRACTION:
                found.append(
                    Construction(
                        name,
                        "duplicated columns",
                        share,
                        f"{share:.0%} of {w.shape[1]} inputs write the same vector (an imprint read-back)",
                    )
                )
        if w.shape[1] >= 8:
            pos = w.clamp(min=0).sum(1)
            neg = (-w).clamp(min=0).sum(1)
            live = (pos > 0) & (neg > 0)
            if live.sum() >= 2:
                ratio = float((neg[live] / pos[live]).median())
                if ratio >= TRAP_RATIO:
                    found.append(
                        Construction(
                            name,
                            "trap weights",
                            ratio,
                            f"negative entries outweigh positive ones {ratio:.1f}x per unit (units firing for few "
                            "records)",
                        )
                    )
            zero_rows = float(((w == 0).double().mean(1) >= SPARSE_ZERO_FRACTION).double().mean())
            if zero_rows >= SPARSE_ROW_FRACTION:
                found.append(
                    Construction(
                        name,
                        "sparse rows",
                        zero_rows,
                        f"{zero_rows:.0%} of the units read under {1 - SPARSE_ZERO_FRACTION:.0%} of the inputs",
                    )
                )
    return found


def numerical_rank(m: Tensor) -> int:
    s = torch.linalg.svdvals(m.double())
    if len(s) == 0 or float(s[0]) == 0.0:
        return 0
    return int((s > RANK_TOL * s[0]).sum())


def update_exposure(payload: dict[str, Tensor], relu_layers: set[str] | None = None) -> list[Exposure]:
    """Per linear layer with a bias in ``payload`` (gradients, or deltas w1 - w0): the exposure of its records.
    ``relu_layers``: the layers followed by a ReLU (SPEAR's setting); None treats every layer as such."""
    out: list[Exposure] = []
    for name, (gw, gb) in linear_layers(payload).items():
        if gb is None or not torch.isfinite(gw).all() or not torch.isfinite(gb).all():
            continue
        active = gb.abs() > 0
        if not bool(active.any()):
            continue
        rank = numerical_rank(gw)
        zero_rows = float((gw.abs().sum(1) == 0).double().mean())
        if rank == 1:
            x = gw[active] / gb[active, None]
            spread = float((x - x[0]).abs().max() / x[0].abs().max().clamp(min=1e-30))
            exact = spread < 1e-3
            out.append(
                Exposure(
                    name,
                    "linear read-out",
                    exact,
                    rank,
                    zero_rows,
                    "weight gradient / bias gradient is one record exactly"
                    if exact
                    else f"rank one but the read-outs disagree (spread {spread:.1e})",
                )
            )
        elif (relu_layers is None or name in relu_layers) and rank < min(gw.shape):
            reach = rank <= SPEAR_REACH and zero_rows > 0
            out.append(
                Exposure(
                    name,
                    "spear",
                    reach,
                    rank,
                    zero_rows,
                    f"rank {rank} with {zero_rows:.0%} zero rows: "
                    + ("a batch within SPEAR's reach" if reach else "beyond SPEAR's reach"),
                )
            )
    return out


POLICIES = ("warn", "clip", "refuse")


@dataclass
class GuardVerdict:
    """What the guard found and does: ``action`` "send" (as is), "withhold" (the flagged layers go back as
    received, i.e. their update is cut to zero), or "refuse" (nothing is sent)."""

    policy: str
    constructions: list[Construction]
    exposures: list[Exposure]
    action: str
    withheld: list[str]

    @property
    def flagged_layers(self) -> list[str]:
        layers = [c.layer for c in self.constructions] + [e.layer for e in self.exposures if e.exact]
        return sorted(set(layers))

    def lines(self) -> list[str]:
        out = [f"received model, layer {c.layer!r}: {c.kind}: {c.detail}" for c in self.constructions]
        out += [f"own update, layer {e.layer!r}: {e.kind}: {e.detail}" for e in self.exposures if e.exact]
        return out


def guard_decision(received: dict[str, Tensor], sent: dict[str, Tensor], policy: str = "warn") -> GuardVerdict:
    """Inspect the received global model and the update ``sent - received`` the client is about to send."""
    if policy not in POLICIES:
        from fedleak.errors import FedleakInputError

        raise FedleakInputError(f"leakage guard policy {policy!r}: choose one of {', '.join(POLICIES)}")
    payload = {
        k: sent[k].detach().double() - received[k].detach().double()
        for k in sent
        if k in received and sent[k].is_floating_point() and sent[k].shape == received[k].shape
    }
    verdict = GuardVerdict(policy, inspect_global_model(received), update_exposure(payload), "send", [])
    flagged = verdict.flagged_layers
    if flagged and policy == "refuse":
        verdict.action = "refuse"
    elif flagged and policy == "clip":
        verdict.action, verdict.withheld = "withhold", flagged
    return verdict


def apply_verdict(received: dict[str, Tensor], sent: dict[str, Tensor], verdict: GuardVerdict) -> dict[str, Tensor]:
    """The state the client sends under ``verdict`` (the withheld layers as received); call only when the
    action is not "refuse"."""
    out = dict(sent)
    for layer in verdict.withheld:
        for k in (f"{layer}.weight", f"{layer}.bias") if layer else ("weight", "bias"):
            if k in out and k in received:
                out[k] = received[k].clone()
    return out
