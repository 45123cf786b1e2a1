"""DAGER-style exact batch recovery from a decoder LM's update (after Petrov et al., NeurIPS 2024).

The gradient of a linear layer ``y = W z`` over a batch is ``dL/dW = sum_i g_i z_i^T``: its row space is
spanned by the layer's inputs ``z_i``, and when there are fewer inputs than the width it is a proper subspace
in which a vector that is *not* an input almost never lies. In a pre-LayerNorm decoder the first block's
Q/K/V projection reads ``z = LN1(E[token] + P[position])``, so

1. for every position p, the tokens whose ``LN1(E[t] + P[p])`` lies in the span of the first block's
   ``qkv.weight`` gradient are the tokens the batch holds at p (candidates: the non-zero rows of the
   embedding gradient when the head is untied, else the whole vocabulary);
2. sequences grow position by position: a prefix extended by a candidate survives when the second block's
   Q/K/V input at its last position (which, the attention being causal, depends on the prefix only) lies in
   the span of the second block's ``qkv.weight`` gradient;
3. the client's loss masks padding (a PAD input predicts nothing, so it is in no span): a prefix that no
   candidate extends is a record that ends there, PAD after it; the prefixes alive at the last position are
   the full-length records. The second block's gradient has one input per distinct prefix, so its rank minus
   the prefixes that were extended is the number of records (``extras["batch_size_from_rank"]``, against
   ``extras["sequences_found"]``); a shortfall is reported, not hidden. A record that is a prefix of another in
   the same batch leaves no input of its own in either span and is not told apart.

Variants: a FedAvg delta (``kind == "delta"``, a few local SGD steps) is a sum of gradients at nearby weights
and its span is checked the same way against the global model with a looser tolerance; a LoRA update (only the
adapters ``A`` (r x d) and ``B`` (3d x r) of each Q/K/V projection are sent) gives ``dB = sum_i g_i (A z_i)^T``
and ``dA = B^T sum_i g_i z_i^T``, both of rank <= r. ``dB``'s rows live in the r-dimensional space of ``A z``,
which n > r inputs fill (*vacuous*: every vector passes). ``dA``'s rows lie in the span of the inputs ``z_i``
themselves, but it is zero while ``B`` is (LoRA starts with ``B = 0``: a first-round update carries nothing
there) and, once ``B`` has trained, its rank is min(r, n): with n <= r inputs (tokens of the batch) it *is*
their span and the attack is exact; with n > r it is an r-dimensional slice of it (*saturated*) that a true
input generally lies outside, so nothing is found.

    >>> import fedleak
    >>> data = fedleak.data.load("demo-records")
    >>> model = fedleak.models.build("gpt:dim=128,heads=4", data.spec, seed=0)
    >>> update = fedleak.fl.client_update(model, data.subset([0, 1]))
    >>> rec = dager_attack([update])[0]
    >>> sorted(map(tuple, rec.tokens.tolist())) == sorted(map(tuple, data.raw[[0, 1]].tolist()))
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from fedleak.attacks.inversion.text import TEXT_ATTACKS, TextReconstruction, _model
from fedleak.attacks.inversion.tokens import token_set
from fedleak.errors import FedleakInputError
from fedleak.fl.update import ClientUpdate


@dataclass(frozen=True)
class DagerOptions:
    tol: float | None = None  # relative distance to the span counted as "in it" (None: 1e-3 FedSGD; FedAvg: tried)
    rank_tol: float = 1e-7  # singular values under rank_tol x the largest are float32 noise (measured ~2e-8)
    max_prefixes: int = 20_000  # a beam wider than this means the span check no longer separates: stop


def row_span(grad: Tensor, rank_tol: float, delta: bool = False) -> Tensor:
    """An orthonormal basis (d, r) of the row space of ``grad`` (float64), r its numerical rank: singular values
    above ``rank_tol`` x the largest and, for a FedAvg ``delta``, above 3x its noise floor (``w1 - w0`` carries
    float32 rounding of the weights, ~1e-5 of its largest singular value, where a gradient carries ~2e-8; a
    gradient keeps every value above ``rank_tol``: at B=64 its real directions go down to ~1e-5 too)."""
    g = grad.detach().double()
    if not torch.isfinite(g).all():
        raise FedleakInputError("the update holds NaN/inf values; a finite update is needed to attack it")
    _, s, vh = torch.linalg.svd(g, full_matrices=False)
    if s.numel() == 0 or s[0] == 0:
        return g.new_zeros(g.shape[1], 0)
    # the float noise floor, from the bottom quarter (no inputs there) of a space wide enough to have one
    floor = s[-(len(s) // 4) :].median() if delta and len(s) >= 64 else s.new_zeros(())
    return vh[: int((s > torch.maximum(rank_tol * s[0], 3 * floor)).sum())].T


def span_distance(z: Tensor, basis: Tensor) -> Tensor:
    """Relative distance of each row of ``z`` to the span of ``basis``'s columns."""
    z = z.double()
    r = z - (z @ basis) @ basis.T
    return r.norm(dim=1) / z.norm(dim=1).clamp_min(1e-30)


class _Layer:
    """The span checks of one block's Q/K/V projection: the inputs ``z`` -> one relative distance per row.

    ``vacuous``: every check's span fills its whole space (each vector passes). ``saturated``: a LoRA ``dA``
    whose rank reached the adapter rank r: with more inputs than r its row space is an r-dimensional slice of
    their span, so true inputs fail the check (recovery then needs batches of at most r inputs).
    """

    def __init__(
        self, model: torch.nn.Module, payload: dict[str, Tensor], block: int, rank_tol: float, delta: bool = False
    ) -> None:
        self.delta = delta
        qkv = model.blocks[block].attn.qkv
        pre = f"blocks.{block}.attn.qkv."
        self.checks: list[tuple[Tensor | None, Tensor]] = []  # (projection or None, basis)
        self.ranks: list[int] = []
        self.vacuous = self.saturated = False
        if pre + "weight" in payload:
            self._add(None, payload[pre + "weight"], rank_tol)
        elif pre + "lora_b" in payload:
            a = qkv.lora_a.detach().double()
            self._add(a.T, payload[pre + "lora_b"], rank_tol)  # rows of dB live in A z space
            if payload[pre + "lora_a"].abs().max() > 0:  # dA = B^T dW: zero while B is (LoRA's first step)
                self._add(None, payload[pre + "lora_a"], rank_tol)  # rows of dA live in z space
                self.saturated = self.ranks[-1] >= a.shape[0]
        else:
            raise FedleakInputError(f"the update has no gradient for {pre}weight (nor LoRA adapters); dager needs one")
        # LayerNorm's output has zero mean: inputs z span at most d - 1 dimensions, which is then all of them
        self.vacuous = all(b.shape[1] >= b.shape[0] - (p is None) for p, b in self.checks)

    def _add(self, proj: Tensor | None, grad: Tensor, rank_tol: float) -> None:
        basis = row_span(grad, rank_tol, self.delta)
        self.checks.append((proj, basis))
        self.ranks.append(basis.shape[1])

    def distance(self, z: Tensor) -> Tensor:
        d = torch.zeros(z.shape[0], dtype=torch.float64, device=z.device)
        for proj, basis in self.checks:
            zz = z.double() if proj is None else z.double() @ proj
            d = torch.maximum(d, span_distance(zz, basis))
        return d


def _candidates(model: torch.nn.Module, u: ClientUpdate) -> Tensor:
    tied = model.head.weight is model.tok.weight
    if "tok.weight" in u.payload and not tied:
        return token_set(u.payload, "tok.weight").to(model.tok.weight.device)
    return torch.arange(model.tok.weight.shape[0], device=model.tok.weight.device)


@dataclass
class _Search:
    per_pos: list[Tensor]
    found: Tensor
    counts: list[int]
    stopped: int | None


DELTA_TOLERANCES = (3e-3, 1e-2, 2e-2, 3e-2, 5e-2)  # a FedAvg delta's inputs drift from w0's: tried in turn


@torch.no_grad()
def _search(model: torch.nn.Module, l1: _Layer, l2: _Layer, cand: Tensor, tol: float, opts: DagerOptions) -> _Search:
    """Token sets per position (layer 1), then sequences grown position by position (layer 2), at ``tol``."""
    length, pad = model.pos.weight.shape[0], int(getattr(model, "pad_id", 0))
    per_pos = []
    for p in range(length):
        z = model.blocks[0].ln1(model.tok.weight[cand] + model.pos.weight[p])
        per_pos.append(cand[l1.distance(z) < tol])
    blk = model.blocks[0]
    heads, dim = blk.attn.heads, model.tok.weight.shape[1]
    prefixes = torch.zeros(1, 0, dtype=torch.long, device=cand.device)
    keys = values = model.tok.weight.new_zeros(1, heads, 0, dim // heads)  # block 0's K/V of each prefix
    ended: list[Tensor] = []  # prefixes no candidate extends: records that end there (PAD after)
    counts, stopped = [], None
    for p in range(length):
        c = per_pos[p]
        parent = torch.arange(len(prefixes), device=c.device).repeat_interleave(len(c))
        tokens = c.repeat(len(prefixes))
        if len(parent) > opts.max_prefixes:
            stopped = p
            break
        x = model.tok.weight[tokens] + model.pos.weight[p]  # block 0 at the new position only (causal)
        q, k, v = blk.attn.qkv(blk.ln1(x)).view(len(x), 3, heads, 1, dim // heads).unbind(1)
        kk, vv = torch.cat([keys[parent], k], 2), torch.cat([values[parent], v], 2)
        att = torch.softmax(q @ kk.transpose(-1, -2) / (dim // heads) ** 0.5, dim=-1)
        h = x + blk.attn.out((att @ vv).reshape(len(x), dim))
        h = h + blk.mlp(blk.ln2(h))
        keep = l2.distance(model.blocks[1].ln1(h)) < tol
        if p > 0:
            extended = torch.zeros(len(prefixes), dtype=torch.bool, device=c.device)
            extended[parent[keep]] = True
            ended.append(prefixes[~extended])
        prefixes = torch.cat([prefixes[parent], tokens.unsqueeze(1)], 1)[keep]
        keys, values = kk[keep], vv[keep]
        counts.append(len(prefixes))
        if len(prefixes) == 0:
            if p == 0:
                stopped = p
            break
    ended.append(prefixes)
    if stopped is None:
        found = torch.cat([torch.nn.functional.pad(e, (0, length - e.shape[1]), value=pad) for e in ended])
    else:
        found = cand.new_zeros(0, length)
    return _Search(per_pos, found, counts, stopped)


@torch.no_grad()
def dager_one(u: ClientUpdate, opts: DagerOptions) -> TextReconstruction:
    model = _model(u).eval()  # float32 as the client computed; distances in float64
    if not hasattr(model, "training_targets") or len(model.blocks) < 2:
        raise FedleakInputError("--attack dager needs a decoder LM with >= 2 blocks (e.g. --model gpt); use tag")
    length, pad = model.pos.weight.shape[0], int(getattr(model, "pad_id", 0))
    delta = u.kind == "delta"
    l1, l2 = (_Layer(model, u.payload, b, opts.rank_tol, delta) for b in (0, 1))
    cand = _candidates(model, u)
    cand = cand[cand != pad]  # a PAD input has no loss (masked): it is in no span; records end instead
    # layer 2 holds one input per distinct prefix: a search whose prefixes add up to its rank is consistent.
    # A FedAvg delta's tolerance is not known in advance: the first consistent one (else the closest) is kept.
    tols = [opts.tol] if opts.tol is not None else (DELTA_TOLERANCES if u.kind == "delta" else [1e-3])
    best: tuple[float, float, _Search] | None = None
    for tol in tols:
        if l2.vacuous:  # every prefix would pass: nothing can be told apart, so nothing is searched
            best = (float("inf"), tol, _Search([cand.new_zeros(0)] * length, cand.new_zeros(0, length), [], 0))
            break
        res = _search(model, l1, l2, cand, tol, opts)
        gap = abs(sum(res.counts) - l2.ranks[-1]) if res.stopped is None else float("inf")
        if best is None or gap < best[0]:
            best = (gap, tol, res)
        if gap == 0:
            break
    assert best is not None
    _, tol, res = best
    found, counts, stopped = res.found, res.counts, res.stopped
    batch = u.num_samples or len(found)
    rows = found if len(found) >= batch else torch.cat([found, found.new_full((batch - len(found), length), pad)])
    extras = {
        "candidates_per_position": [len(c) for c in res.per_pos],
        "prefixes": counts,
        "rank_1": l1.ranks,
        "rank_2": l2.ranks,
        "sequences_found": len(found),
        "batch_size_from_rank": l2.ranks[-1] - (sum(counts) - len(found)) if stopped is None else None,
        "span_vacuous": l1.vacuous or l2.vacuous,
        "span_saturated": l1.saturated or l2.saturated,
        "stopped_at_position": stopped,
        "tolerance": tol,
        "tolerances_tried": list(tols[: tols.index(tol) + 1]) if best[0] == 0 else list(tols),
    }
    return TextReconstruction("dager", cand.cpu(), rows.cpu(), None, False, float("nan"), extras)


@TEXT_ATTACKS.register("dager", "decoder LMs: exact batch from the span of the first two attention layers' gradients")
def dager_attack(updates: Sequence[ClientUpdate], **options: object) -> list[TextReconstruction]:
    known = {"tol", "rank_tol", "max_prefixes"}
    opts = DagerOptions(**{k: v for k, v in options.items() if k in known and v is not None})  # type: ignore[arg-type]
    return [dager_one(u, opts) for u in updates]


__all__ = ["DagerOptions", "dager_attack", "dager_one", "row_span", "span_distance"]
