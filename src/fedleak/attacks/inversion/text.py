"""Text inversion: the words (and their order) a client trained on, from the update it sent.

Three attacks, by name in :data:`TEXT_ATTACKS` (``dager``, for decoder LMs, lives in :mod:`.dager`):

- ``tokens``: the exact set of tokens the batch used, read off the rows of the embedding gradient that are
  non-zero (:mod:`.tokens`); no optimisation, exact for a batch as for one record.
- ``tag``: full sequences. TAG-style gradient matching (Deng et al. 2021: squared L2 + alpha * L1 distance
  between the dummy and the observed update), done in embedding space but *restricted to the recovered token
  set*: each position holds a softmax over the k tokens of the set (so the dummy input is a mixture of k
  embedding rows, and the embedding gradient it produces has the client's exact row structure). After the
  continuous phase each position is projected to its most likely token, and a discrete refinement lowers the
  same gradient distance by single-token replacements (the few most promising per position, ranked by the
  distance's gradient with respect to the one-hot input, as in HotFlip/GCG) and position swaps, until no
  move helps. The observed update is reproduced exactly only by the true sequence (up to ties), so the
  refinement ends at it when it gets close.

  Position embeddings give the ordering its signal, and a first start (``init="positions"``, the default)
  reads it directly: the input of the first block is token embedding + position embedding, so for one
  record dL/dE_tok[v] is the sum of dL/dE_pos[i] over the positions i that hold v, and a token used once has
  exactly the gradient row of its position. Restart 0 starts from these cosine scores (the others at
  random); a start that already reproduces the update (distance < ``SOLVED``) skips the optimisation, which
  then runs only on the targets left. ``init="random"`` is plain TAG over the token set.
  For a FedAvg update (``kind == "delta"``) the dummy update replays the client's local SGD steps
  (:func:`fedleak.attacks.inversion.replay.fedavg_delta`).

Labels are taken from the update when the threat model grants them, else recovered from the class head's
gradient (:mod:`.labels`). Several updates against the same global model (several targets) are solved as one
vectorised problem: targets and restarts are stacked along a leading dimension and run through
``torch.func.vmap``, the token sets padded to one size and masked.

    >>> import fedleak
    >>> data = fedleak.data.load("demo-records")
    >>> model = fedleak.models.build("transformer:32,1", data.spec, seed=0)
    >>> update = fedleak.fl.client_update(model, data.subset([0]))
    >>> rec = invert_text(update, attack="tag", iterations=5, restarts=1, seed=0)[0]
    >>> tok = data.extras["tokenizer"]
    >>> tok.decode(rec.tokens[0]) == tok.decode(data.raw[0])
    True
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import grad_and_value, vmap

from fedleak.attacks.inversion.labels import last_layer, recover_labels
from fedleak.attacks.inversion.objectives import tag_distance
from fedleak.attacks.inversion.replay import attack_module, fedavg_delta, fedsgd_gradient
from fedleak.attacks.inversion.tokens import embedding_name, token_set
from fedleak.errors import FedleakInputError
from fedleak.fl.update import ClientUpdate
from fedleak.models.text import position_embedding
from fedleak.registry import Registry


@dataclass
class TextReconstruction:
    """What a text attack recovered from one update (one batch of B records)."""

    attack: str
    token_set: Tensor  # (k,) sorted vocabulary ids whose embedding rows were updated (PAD included if used)
    tokens: Tensor | None  # (B, L) recovered token ids, or None when the attack recovers the set only
    labels: Tensor | None  # (B,) labels used by the attack (granted or recovered)
    labels_recovered: bool = False  # True when the labels were inferred, not granted
    distance: float = float("nan")  # final gradient distance (normalised update), tag only
    extras: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TagOptions:
    """Settings of the ``tag`` attack."""

    iterations: int = 50  # Adam steps of the continuous (softmax over the token set) phase
    restarts: int = 4  # independent starts per target; the best after projection is refined
    init: str = "positions"  # first start from the position-gradient match ("random": all starts random)
    lr: float = 0.1
    alpha: float = 0.01  # weight of TAG's L1 term
    refine: int = 60  # at most this many rounds of discrete moves
    candidates: int = 4  # replacement tokens tried per position and round
    swaps: bool = True  # also try swapping every pair of positions
    chunk: int = 1024  # candidate records per vectorised evaluation (memory bound)
    seed: int = 0
    match: str = "all"  # FedSGD: "all" parameters, or only the token/position "embeddings" and class head


MATCH = ("embeddings", "all")
INIT_SHARPNESS = 10.0  # logits = this x cosine score, for the position-gradient start
SOLVED = 1e-5  # normalised distance under which a candidate reproduces the update (float noise: ~1e-7)

TextAttack = Callable[..., list[TextReconstruction]]
TEXT_ATTACKS: Registry[TextAttack] = Registry("text attack")


def _labels(update: ClientUpdate, batch: int) -> tuple[Tensor, bool]:
    if update.labels is not None:
        return update.labels.detach().long(), False
    spec = update.data_spec
    w, b = last_layer(update.payload, spec.num_classes if spec is not None else None)
    if w is None:
        raise FedleakInputError("labels are not granted and the model has no class head to read them from")
    sign = -1.0 if update.kind == "delta" else 1.0
    return recover_labels(update.payload, w, b, batch, sign).to(update.payload[w].device), True


def _model(update: ClientUpdate) -> torch.nn.Module:
    from fedleak.models import build

    if update.data_spec is None or update.data_spec.vocab_size is None:
        raise FedleakInputError("text inversion needs the update's data_spec (a text dataset's vocabulary)")
    dev = next(iter(update.payload.values())).device
    model = build(update.model, update.data_spec, device=dev)
    model.load_state_dict(update.global_state)
    return model


@TEXT_ATTACKS.register("tokens", "the exact token set, from the non-zero rows of the embedding gradient")
def tokens_attack(updates: Sequence[ClientUpdate], **_: object) -> list[TextReconstruction]:
    out = []
    for u in updates:
        model = _model(u)
        name = embedding_name(model, u.data_spec.vocab_size)
        batch = u.num_samples or (len(u.labels) if u.labels is not None else 1)
        labels, inferred = _labels(u, batch)
        out.append(TextReconstruction("tokens", token_set(u.payload, name), None, labels.cpu(), inferred))
    return out


class _Case:
    """Updates against one global model, stacked: T targets, each a batch of B records of length L, with its
    token set padded to K entries. ``distance`` is the normalised TAG distance of one candidate batch."""

    def __init__(self, updates: Sequence[ClientUpdate], opts: TagOptions) -> None:
        u0 = updates[0]
        self.opts = opts
        model = _model(u0)
        self.dev = next(model.parameters()).device
        self.module = attack_module(model, u0.train_mode)
        self.emb = embedding_name(model, u0.data_spec.vocab_size)
        trainable = [n for n, p in model.named_parameters() if p.requires_grad]
        self.names = trainable
        if opts.match == "embeddings" and u0.kind == "gradient":  # a FedAvg replay needs every parameter
            head, _ = last_layer(u0.payload, u0.data_spec.num_classes)
            keep = {self.emb, head, position_embedding(model), (head or "")[: -len("weight")] + "bias"}
            self.names = [n for n in trainable if n in keep]
        elif opts.match not in MATCH:
            raise FedleakInputError(f"tag: match={opts.match!r}; choose one of {', '.join(MATCH)}")
        self.shared = {n: u0.global_state[n].to(self.dev) for n in self.names if n != self.emb}
        self.consts = {k: v.to(self.dev) for k, v in u0.global_state.items() if k not in self.shared}
        self.consts.pop(self.emb)
        self.kind = u0.kind
        self.meta = (u0.local_steps, u0.local_lr, u0.batch_size)
        self.batch = u0.num_samples or (len(u0.labels) if u0.labels is not None else None)
        if self.batch is None:
            raise FedleakInputError("attack 'tag' needs num_samples (or labels), which this view does not grant")
        if self.kind == "delta":
            u0.require("local_steps", "local_lr", "batch_size", attack="tag")
        self.length = int(u0.data_spec.shape[0])
        table = u0.global_state[self.emb].to(self.dev)
        self.sets = [token_set(u.payload, self.emb).to(self.dev) for u in updates]
        if any(len(s) == 0 for s in self.sets):
            raise FedleakInputError("an update has no non-zero embedding row: nothing to invert")
        self.k = max(len(s) for s in self.sets)
        padded = torch.stack([torch.cat([s, s[:1].expand(self.k - len(s))]) for s in self.sets])
        self.valid = (
            torch.arange(self.k, device=self.dev)[None]
            < torch.tensor([len(s) for s in self.sets], device=self.dev)[:, None]
        )
        self.E = table[padded]  # (T, K, d)
        labels = [_labels(u, self.batch) for u in updates]
        self.y = torch.stack([lab.to(self.dev) for lab, _ in labels])  # (T, B)
        self.labels_recovered = [inf for _, inf in labels]
        targets = []
        for u, idx in zip(updates, padded, strict=True):
            t = {n: u.payload[n].to(self.dev) for n in self.names}
            t[self.emb] = t[self.emb][idx]  # only the set's rows can differ from zero
            t[self.emb][len(self.sets[len(targets)]) :] = 0  # padding entries of the set
            targets.append(t)
        self.target = {n: torch.stack([t[n] for t in targets]) for n in self.names}
        norm = sum(self.target[n].flatten(1).pow(2).sum(1) for n in self.names).sqrt()
        self.scale = 1.0 / norm.clamp_min(1e-30)  # (T,): every target's update has norm 1 in the distance
        self.mask_bias = torch.where(self.valid, 0.0, -1e4)  # (T, K)
        pos = position_embedding(model)
        self.pos_rows = None  # (T, L, d): the observed position-embedding rows, when the model has them
        if pos is not None:
            self.pos_rows = torch.stack([u.payload[pos][: self.length].to(self.dev) for u in updates])

    def position_scores(self) -> Tensor | None:
        """(T, L, K) cosine similarity of each position's embedding-gradient row with each token's row.

        For one record, dL/dE_tok[v] is the sum of dL/dE_pos[i] over the positions i holding v (both are the
        gradient at the input of the first block), so a token used once has exactly its position's row."""
        if self.pos_rows is None:
            return None
        tok = F.normalize(self.target[self.emb], dim=-1)
        return F.normalize(self.pos_rows, dim=-1) @ tok.transpose(1, 2)

    def position_start(self) -> Tensor | None:
        """(T, B, L, K) start logits from :meth:`position_scores`, the same for every record of a batch.

        Exact for one record up to repeated tokens; for a batch a position's row is the sum over the records,
        so the start is only a hint (measured: it does not separate the records; see bench/text.py)."""
        scores = self.position_scores()
        return None if scores is None else scores[:, None].expand(-1, self.batch, -1, -1)

    def subset(self, rows: Tensor) -> _Case:
        """The same case for the targets ``rows`` only."""
        sub = copy.copy(self)
        for name in ("E", "valid", "y", "scale", "mask_bias", "pos_rows"):
            v = getattr(self, name)
            setattr(sub, name, None if v is None else v[rows])
        sub.target = {n: v[rows] for n, v in self.target.items()}
        idx = rows.tolist()
        sub.sets = [self.sets[i] for i in idx]
        sub.labels_recovered = [self.labels_recovered[i] for i in idx]
        return sub

    # ------------------------------------------------------------ the distance of one candidate batch

    def distance(self, onehot: Tensor, e: Tensor, y: Tensor, target: dict[str, Tensor], scale: Tensor) -> Tensor:
        params = {**self.shared, self.emb: e}
        if self.kind == "gradient":
            g = fedsgd_gradient(self.module, params, self.consts, onehot, y)
        else:
            steps, lr, bs = self.meta
            g = fedavg_delta(self.module, params, self.consts, onehot, y, local_steps=steps, local_lr=lr, batch_size=bs)
        return tag_distance(
            [g[n] * scale for n in self.names], [target[n] * scale for n in self.names], alpha=self.opts.alpha
        )

    def expand(self, reps: int) -> tuple[Tensor, ...]:
        """Per-problem tensors for ``reps`` problems per target (restarts or candidates), flattened."""
        tgt = {n: v.repeat_interleave(reps, 0) for n, v in self.target.items()}
        return (
            self.E.repeat_interleave(reps, 0),
            self.y.repeat_interleave(reps, 0),
            tgt,
            self.scale.repeat_interleave(reps, 0),
        )

    def hard_distance(self, X: Tensor, rows: Tensor | None = None) -> Tensor:
        """Distances of candidate batches ``X`` (T', C, B, L) of set indices, for targets ``rows`` (T')."""
        rows = torch.arange(len(self.E), device=self.dev) if rows is None else rows
        t, c = X.shape[:2]
        per = max(1, self.opts.chunk // max(1, self.batch * t))
        out = []
        for s in range(0, c, per):
            xs = X[:, s : s + per]
            n = xs.shape[1]
            oh = F.one_hot(xs, self.k).to(self.E.dtype).flatten(0, 1)
            e = self.E[rows].repeat_interleave(n, 0)
            y = self.y[rows].repeat_interleave(n, 0)
            tgt = {k: v[rows].repeat_interleave(n, 0) for k, v in self.target.items()}
            sc = self.scale[rows].repeat_interleave(n, 0)
            out.append(vmap(self.distance)(oh, e, y, tgt, sc).view(t, n))
        return torch.cat(out, 1)


def _continuous(case: _Case, opts: TagOptions, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Adam on softmax logits over the token set, all targets x restarts at once; returns the projected
    sequences (T, B, L) of set indices of the best restart per target and their distances."""
    t, r = len(case.E), opts.restarts
    e, y, tgt, sc = case.expand(r)
    bias = case.mask_bias.repeat_interleave(r, 0)[:, None, None, :]
    z = (0.01 * torch.randn(t, r, case.batch, case.length, case.k, generator=g)).to(case.dev)
    scores = case.position_start() if opts.init == "positions" else None
    if scores is not None:  # restart 0 of every target starts at the position-gradient match
        z[:, 0] += INIT_SHARPNESS * scores
    starts = (z[:, :1] + case.mask_bias[:, None, None, None, :]).argmax(-1)  # (T, 1, B, L), kept
    z = z.flatten(0, 1)
    z.requires_grad_(True)
    opt = torch.optim.Adam([z], lr=opts.lr)

    def total(zz: Tensor) -> tuple[Tensor, Tensor]:
        d = vmap(case.distance)(torch.softmax(zz + bias, -1), e, y, tgt, sc)
        return d.sum(), d

    step = grad_and_value(total, has_aux=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, opts.iterations))
    for _ in range(opts.iterations):
        gz, _ = step(z.detach())
        z.grad = gz
        opt.step()
        sched.step()
    proj = (z.detach() + bias).argmax(-1).view(t, r, case.batch, case.length)
    if scores is not None and opts.iterations > 0:  # the optimisation may have left a better start
        proj = torch.cat([proj, starts], 1)
    d = case.hard_distance(proj)
    best = d.argmin(1)
    ar = torch.arange(t, device=case.dev)
    return proj[ar, best], d[ar, best]


def _solved_starts(case: _Case, opts: TagOptions) -> tuple[Tensor, Tensor, Tensor]:
    """The position-gradient starts, projected, with their distances, and which targets still need the
    optimisation: a start that already reproduces the update (distance below ``SOLVED``) is the answer."""
    t = len(case.E)
    X = torch.zeros(t, case.batch, case.length, dtype=torch.long, device=case.dev)
    d = torch.full((t,), math.inf, device=case.dev)
    start = case.position_start() if opts.init == "positions" else None
    if start is None:
        return X, d, torch.ones(t, dtype=torch.bool, device=case.dev)
    X = (start + case.mask_bias[:, None, None, :]).argmax(-1)
    d = case.hard_distance(X[:, None])[:, 0]
    return X, d, d > SOLVED


def _swapped(X: Tensor, ra: Tensor, pa: Tensor, rb: Tensor, pb: Tensor) -> Tensor:
    """Candidates (R, n, b, L): candidate c is X with the tokens at (record ra[c], position pa[c]) and
    (rb[c], pb[c]) exchanged."""
    c = X[:, None].repeat(1, len(ra), 1, 1)
    idx = torch.arange(len(ra), device=X.device)
    c[:, idx, ra, pa] = X[:, rb, pb]
    c[:, idx, rb, pb] = X[:, ra, pa]
    return c


def _moves(case: _Case, X: Tensor, rows: Tensor, opts: TagOptions) -> Tensor:
    """Candidate batches (T', C, B, L): the ``candidates`` best replacements per position by the linearised
    change of the distance, then every swap of two positions within a record."""
    t, b, L = X.shape
    oh = F.one_hot(X, case.k).to(case.E.dtype)
    tgt = {k: v[rows] for k, v in case.target.items()}
    ga, _ = vmap(grad_and_value(case.distance))(oh, case.E[rows], case.y[rows], tgt, case.scale[rows])
    gain = ga - ga.gather(-1, X[..., None])
    gain = gain.masked_fill(~case.valid[rows][:, None, None, :], math.inf).scatter(-1, X[..., None], math.inf)
    m = max(1, min(opts.candidates, case.k - 1))
    top = gain.topk(m, dim=-1, largest=False).indices  # (T', B, L, m)
    bi, li, mi = torch.meshgrid(torch.arange(b), torch.arange(L), torch.arange(m), indexing="ij")
    bi, li, mi = (a.flatten().to(case.dev) for a in (bi, li, mi))
    c1 = X[:, None].repeat(1, len(bi), 1, 1)
    cidx = torch.arange(len(bi), device=case.dev)
    c1[:, cidx, bi, li] = top[:, bi, li, mi]
    parts = [c1]
    if opts.swaps and L > 1:
        i, j = torch.triu_indices(L, L, 1, device=case.dev)
        sb = torch.arange(b, device=case.dev).repeat_interleave(len(i))
        si, sj = i.repeat(b), j.repeat(b)
        parts.append(_swapped(X, sb, si, sb, sj))
    if opts.swaps and b > 1:  # exchange the tokens of two records at one position
        p, q = torch.triu_indices(b, b, 1, device=case.dev)
        pos = torch.arange(L, device=case.dev).repeat_interleave(len(p))
        sp, sq = p.repeat(L), q.repeat(L)
        parts.append(_swapped(X, sp, pos, sq, pos))
    return torch.cat(parts, 1)


def _refine(
    case: _Case, X: Tensor, d: Tensor, opts: TagOptions, active: Tensor | None = None
) -> tuple[Tensor, Tensor, int]:
    """Greedy discrete descent of the gradient distance; each round every still-improving target (of the
    ``active`` ones) takes its best move. Returns the sequences, their distances and the rounds run."""
    X, d = X.clone(), d.clone()
    active = torch.ones(len(X), dtype=torch.bool, device=case.dev) if active is None else active.clone()
    rounds = 0
    for _ in range(opts.refine):
        rows = active.nonzero().flatten()
        if len(rows) == 0:
            break
        cands = _moves(case, X[rows], rows, opts)
        dist = case.hard_distance(cands, rows)
        best_d, best_c = dist.min(1)
        better = best_d < d[rows] * (1 - 1e-5)
        upd = rows[better]
        X[upd] = cands[better, best_c[better]]
        d[upd] = best_d[better]
        active[rows[~better]] = False
        rounds += int(better.any())
    return X, d, rounds


def _same_case(a: ClientUpdate, b: ClientUpdate) -> bool:
    keys = ("model", "kind", "num_samples", "local_steps", "local_lr", "batch_size", "train_mode")
    if any(getattr(a, k) != getattr(b, k) for k in keys) or (a.labels is None) != (b.labels is None):
        return False
    return a.global_state.keys() == b.global_state.keys() and all(
        torch.equal(a.global_state[k], b.global_state[k]) for k in a.global_state
    )


@TEXT_ATTACKS.register("tag", "full sequences: TAG gradient matching over the token set, then discrete refinement")
def tag_attack(updates: Sequence[ClientUpdate], **options: object) -> list[TextReconstruction]:
    known = set(TagOptions.__dataclass_fields__)
    bad = [k for k in options if k not in known]
    if bad:
        raise FedleakInputError(f"tag: unknown option {bad[0]!r}; choose from {', '.join(sorted(known))}")
    opts = TagOptions(**{k: v for k, v in options.items() if v is not None})  # type: ignore[arg-type]
    groups: list[list[int]] = []
    for i, u in enumerate(updates):
        for grp in groups:
            if _same_case(updates[grp[0]], u):
                grp.append(i)
                break
        else:
            groups.append([i])
    out: list[TextReconstruction | None] = [None] * len(updates)
    for grp in groups:
        case = _Case([updates[i] for i in grp], opts)
        g = torch.Generator().manual_seed(opts.seed)
        X, d, todo = _solved_starts(case, opts)
        if todo.any():
            rows = todo.nonzero().flatten()
            X[rows], d[rows] = _continuous(case.subset(rows), opts, g)
        d_proj = d.clone()
        X, d, rounds = _refine(case, X, d, opts, active=todo)
        for row, i in enumerate(grp):
            s = case.sets[row]
            out[i] = TextReconstruction(
                "tag",
                s.cpu(),
                s[X[row].clamp_max(len(s) - 1)].cpu(),
                case.y[row].cpu(),
                case.labels_recovered[row],
                float(d[row]),
                {"distance_projected": float(d_proj[row]), "refine_rounds": rounds},
            )
    return out  # type: ignore[return-value]


def invert_text(
    updates: ClientUpdate | Sequence[ClientUpdate], attack: str = "tag", **options: object
) -> list[TextReconstruction]:
    """Run a text attack on one update or several (one :class:`TextReconstruction` each, in order).

    ``options`` go to the attack (for ``tag``: the fields of :class:`TagOptions`).
    """
    fn = TEXT_ATTACKS.get(attack)
    ups = [updates] if isinstance(updates, ClientUpdate) else list(updates)
    if not ups:
        return []
    return fn(ups, **options)


from fedleak.attacks.inversion import dager as _dager  # noqa: E402, F401  (registers "dager")

__all__ = ["TEXT_ATTACKS", "TagOptions", "TextReconstruction", "invert_text", "tag_attack", "tokens_attack"]
