"""Reference (shadow) models, trained K at a time as one vectorised computation.

LiRA, RMIA and Shokri's attack all train many models of the target's architecture on subsets of a data pool.
Here the K models' parameters are stacked along a leading axis (one flat (K, P) tensor) and trained together:
each step runs the K forward passes as one ``torch.func.vmap`` of ``functional_call``, one backward, and one
SGD/Adam update of the flat tensor. Plain MLPs (the classic membership target) skip autograd: their forward
and backward are written out as batched matmuls (:mod:`fedleak.attacks.membership.stacked_mlp`), SGD's
gradient lands in its momentum buffer inside the matmul, and input columns constant over the pool (an image's
empty border) leave the matmuls for the first layer's bias. The batch plan of all K models is built up front.
Model k's initialisation and batch order depend only on ``(seed, k)``, so the vectorised path, the sequential
path (the plain :class:`fedleak.fl.SGDTrainer`, one model after another) and any chunking (e.g. chunks run as
Ray tasks) give the same models up to float noise.

    >>> import fedleak
    >>> from fedleak.fl import TrainSpec
    >>> from fedleak.attacks.membership.references import balanced_masks, train_references
    >>> data = fedleak.data.load("digits")
    >>> x, y = data.tensors(range(200))
    >>> masks = balanced_masks(4, 200, seed=0)
    >>> refs = train_references("mlp:32", data.spec, x, y, masks, TrainSpec(epochs=2))
    >>> tuple(refs.logits(x[:5]).shape)     # (K, records, classes)
    (4, 5, 10)

Cost (``bench/mia.py --only-speed``, one thread, nothing else running, on this machine's AMD EPYC with AVX-512;
the two trainers alternating in one process): the tabular protocol's 16 reference models (784-128-10 MLP, 2,505
records each, 2,000 steps of batch 64) cost 0.92 CPU-s per model vectorised against 1.68 one after another
(1.83x), of which the batched matmuls alone are 0.62 (71 GFLOP/s): even with nothing but them the ratio could not
pass 1.68 / 0.62 = 2.7x. On Location's 446-128-30 shape 0.67 against 1.18 (1.77x; matmuls 0.43). ML Privacy
Meter's tabular default (100 epochs of batch 256, plain SGD: 1,000 steps, twice fedleak's record passes) costs a
loop written like its trainer 4.60 CPU-s per model here against this trainer's 1.11; at fedleak's 2,000 steps of
64, 3.12 against 0.69. (Under load 11 on an earlier machine: 2.70 against 6.62, 2.45x.) fedleak trains reference
models as the target was trained (LiRA's and RMIA's premise), so their work is the user's training spec, not a
setting chosen for speed.

With ``checkpoint_dir`` every finished chunk of models is written (safetensors, atomically) under a name that
fingerprints the work (architecture, training spec, seed, masks, data), so an interrupted run resumes without
retraining the chunks it finished. All arguments are plain values (strings, dataclasses, tensors), so the
function can run inside a Ray task.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap

from fedleak.attacks.membership import stacked_mlp
from fedleak.data.dataset import DataSpec
from fedleak.device import resolve_device
from fedleak.errors import FedleakInputError
from fedleak.fl.local import SGDTrainer, TrainSpec


def model_seed(seed: int, k: int) -> int:
    """The seed of reference model k (its initialisation and its batch order)."""
    return (seed * 1_000_003 + 7_919 * (k + 1)) % (2**62)


def balanced_masks(k: int, n: int, seed: int = 0, fraction: float = 0.5) -> Tensor:
    """(k, n) bool masks: model j trains on the records where ``masks[j]`` is True.

    With ``fraction = 0.5`` models come in complementary pairs (every record is IN for exactly half of the
    models when k is even), the design LiRA and RMIA assume. Every model gets the same number of records
    (floor(n / 2) for pairs), so batches line up across models. Otherwise each model takes its own random
    ``fraction`` of the records.

        >>> m = balanced_masks(4, 10, seed=0)
        >>> m.sum(1).tolist(), m.sum(0).tolist() == [2] * 10
        ([5, 5, 5, 5], True)
    """
    if k < 1 or n < 2:
        raise FedleakInputError(f"reference masks need k >= 1 models and n >= 2 records (got k={k}, n={n})")
    g = torch.Generator().manual_seed(seed * 31 + 17)
    masks = torch.zeros(k, n, dtype=torch.bool)
    half = n // 2
    if fraction == 0.5:
        for j in range(0, k, 2):
            perm = torch.randperm(n, generator=g)
            masks[j, perm[:half]] = True
            if j + 1 < k:
                masks[j + 1, perm[half : 2 * half]] = True
    else:
        size = max(1, min(n, int(round(fraction * n))))
        for j in range(k):
            masks[j, torch.randperm(n, generator=g)[:size]] = True
    return masks


@dataclass
class ReferenceModels:
    """K trained models of one architecture, as stacked parameters and buffers.

    ``masks[k, i]`` says whether model k trained on pool record i; ``pool_ids`` (optional) names the pool
    records (e.g. dataset indices) so that attacks can tell which models saw a given record.
    """

    model_spec: str
    data_spec: DataSpec
    params: dict[str, Tensor]  # name -> (K, ...)
    buffers: dict[str, Tensor]  # name -> (K, ...)
    masks: Tensor  # (K, N) bool
    pool_ids: Tensor | None = None  # (N,) int64
    seconds: float = 0.0  # training time (0 for chunks loaded from checkpoints)

    @property
    def count(self) -> int:
        return int(self.masks.shape[0])

    @property
    def device(self) -> torch.device:
        return next(iter(self.params.values())).device

    def skeleton(self) -> nn.Module:
        """The architecture, for ``functional_call`` (its own weights are never used)."""
        from fedleak.models import build

        if getattr(self, "_skeleton", None) is None:
            self._skeleton = build(self.model_spec, self.data_spec, seed=0, device=self.device).eval()
        return self._skeleton

    @torch.no_grad()
    def logits(self, x: Tensor, batch_size: int = 1024) -> Tensor:
        """(K, n, C) logits of every model on ``x`` (eval mode)."""
        base = self.skeleton().eval()

        def one(p: dict[str, Tensor], b: dict[str, Tensor], xb: Tensor) -> Tensor:
            return functional_call(base, (p, b), (xb,))

        many = vmap(one, in_dims=(0, 0, None))
        dev = self.device
        # cuDNN refuses eval-mode BatchNorm with per-model running statistics under vmap
        # (CUDNN_STATUS_NOT_SUPPORTED, seen on an H200): PyTorch's own kernels run it
        with torch.backends.cudnn.flags(enabled=False):
            chunks = [x[i : i + batch_size].to(dev) for i in range(0, len(x), batch_size)]
            outs = [many(self.params, self.buffers, xb) for xb in chunks]
        return torch.cat(outs, dim=1)

    def model(self, k: int) -> nn.Module:
        """Reference model k as an ordinary module."""
        from fedleak.models import build

        net = build(self.model_spec, self.data_spec, seed=0, device=self.device)
        state = {**{n: p[k] for n, p in self.params.items()}, **{n: b[k] for n, b in self.buffers.items()}}
        net.load_state_dict(state)
        return net.eval()

    def membership(self, ids: Tensor) -> Tensor:
        """(K, n) bool: which models trained on the records with these ``pool_ids`` (unknown ids: none)."""
        if self.pool_ids is None:
            raise FedleakInputError("these reference models carry no pool_ids; pass the in/out masks explicitly")
        where = {int(v): i for i, v in enumerate(self.pool_ids.tolist())}
        pos = torch.tensor([where.get(int(v), -1) for v in ids.tolist()], dtype=torch.long)
        out = torch.zeros(self.count, len(pos), dtype=torch.bool)
        known = pos >= 0
        out[:, known] = self.masks[:, pos[known]].cpu()
        return out

    @staticmethod
    def concat(parts: list[ReferenceModels]) -> ReferenceModels:
        """Join chunks (e.g. from several Ray tasks) in order."""
        first = parts[0]
        return ReferenceModels(
            first.model_spec,
            first.data_spec,
            {n: torch.cat([p.params[n].to(first.device) for p in parts]) for n in first.params},
            {n: torch.cat([p.buffers[n].to(first.device) for p in parts]) for n in first.buffers},
            torch.cat([p.masks for p in parts]),
            first.pool_ids,
            sum(p.seconds for p in parts),
        )


# the batch plan: exactly the batches fl.local.minibatches gives model k, as one (K, S, B) index tensor


def _batch_plan(masks: Tensor, spec: TrainSpec, seeds: list[int]) -> tuple[Tensor, list[int]]:
    """Pool indices (K, S, B) (-1 = padding) and the real batch size at each step (when all models agree).

    Model k draws one ``randperm`` per epoch from its own generator, as ``fl.local.minibatches`` does (so the
    sequential path sees the same batches); the rest is tensor work per model: its epochs' permutations map to
    pool indices in one gather, are padded to whole batches and cut into batches by one reshape."""
    k = masks.shape[0]
    sizes = masks.sum(1).tolist()
    b = max(1, min(spec.batch_size, min(sizes)))
    if len(set(sizes)) != 1:
        b = max(1, min(spec.batch_size, max(sizes)))
    rows = []
    for j in range(k):
        own = masks[j].nonzero().flatten()
        n = len(own)
        bj = max(1, min(spec.batch_size, n))
        per_epoch = (n + bj - 1) // bj
        total = spec.steps if spec.steps is not None else spec.epochs * per_epoch
        epochs = (total + per_epoch - 1) // per_epoch
        g = torch.Generator().manual_seed(seeds[j])
        if epochs == 0:
            rows.append(torch.full((0, b), -1, dtype=torch.long))
            continue
        perms = torch.stack([torch.randperm(n, generator=g) for _ in range(epochs)])  # the same draws
        idx = F.pad(own[perms], (0, per_epoch * bj - n), value=-1)  # (epochs, per_epoch * bj)
        batches = idx.view(epochs * per_epoch, bj)[:total]
        rows.append(F.pad(batches, (0, b - bj), value=-1) if bj < b else batches)
    steps = max(len(r) for r in rows)
    plan = torch.full((k, steps, b), -1, dtype=torch.long)
    for j, r in enumerate(rows):
        plan[j, : len(r)] = r
    step_sizes = (plan >= 0).sum(2).amax(0).tolist() if steps else []
    return plan, step_sizes


class _StackedOptimizer:
    """SGD (momentum, weight decay) or Adam on stacked parameters, matching ``torch.optim`` step for step;
    a model whose ``active`` flag is False this step is left unchanged (it has no batch left)."""

    def __init__(self, params: dict[str, Tensor], spec: TrainSpec) -> None:
        self.spec = spec
        self.state: dict[str, dict[str, Tensor]] = {n: {} for n in params}
        self.t = torch.zeros(next(iter(params.values())).shape[0], device=next(iter(params.values())).device)

    @torch.no_grad()
    def step(self, params: dict[str, Tensor], grads: dict[str, Tensor], active: Tensor | None) -> None:
        s = self.spec
        if active is None and s.optimizer != "adam":  # plain SGD, every model active: three foreach calls
            ps, gs = list(params.values()), [grads[n] for n in params]
            if s.weight_decay:
                gs = torch._foreach_add(gs, ps, alpha=s.weight_decay)
            if s.momentum:
                if "buf" not in self.state[next(iter(params))]:
                    for n, g in zip(params, gs, strict=True):
                        self.state[n]["buf"] = g.clone()
                else:
                    bufs = [self.state[n]["buf"] for n in params]
                    torch._foreach_mul_(bufs, s.momentum)
                    torch._foreach_add_(bufs, gs)
                gs = [self.state[n]["buf"] for n in params]
            torch._foreach_add_(ps, gs, alpha=-s.lr)
            self.t += 1
            return
        if active is not None:
            self.t += active.to(self.t.dtype)
        else:
            self.t += 1
        for n, p in params.items():
            g = grads[n]
            gate = None if active is None else active.view(-1, *([1] * (p.dim() - 1))).to(p.dtype)
            if s.weight_decay:
                g = g.add(p, alpha=s.weight_decay)
            st = self.state[n]
            if s.optimizer == "adam":
                b1, b2, eps = 0.9, 0.999, 1e-8
                m = st.setdefault("m", torch.zeros_like(p))
                v = st.setdefault("v", torch.zeros_like(p))
                if gate is None:
                    m.mul_(b1).add_(g, alpha=1 - b1)
                    v.mul_(b2).addcmul_(g, g, value=1 - b2)
                else:
                    m.copy_(torch.where(gate.bool(), m * b1 + (1 - b1) * g, m))
                    v.copy_(torch.where(gate.bool(), v * b2 + (1 - b2) * g * g, v))
                t = self.t.clamp_min(1).view(-1, *([1] * (p.dim() - 1)))
                bc1 = 1 - b1**t
                bc2 = 1 - b2**t
                upd = (m / bc1) / ((v / bc2).sqrt() + eps) * s.lr
            else:
                if s.momentum:
                    buf = st.get("buf")
                    if buf is None:
                        buf = st["buf"] = g.clone() if gate is None else g * gate
                    elif gate is None:
                        buf.mul_(s.momentum).add_(g)
                    else:
                        buf.copy_(torch.where(gate.bool(), buf * s.momentum + g, buf))
                    g = buf
                upd = g * s.lr
            p.sub_(upd if gate is None else upd * gate)


def _fingerprint(
    model_spec: str, data_spec: DataSpec, x: Tensor, y: Tensor, spec: TrainSpec, seed: int, train_mode: bool
) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([model_spec, asdict(data_spec), asdict(spec), seed, train_mode], default=str).encode())
    h.update(x.detach().cpu().contiguous().float().numpy().tobytes())
    h.update(y.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _chunk_digest(fp: str, masks: Tensor, start: int) -> str:
    h = hashlib.sha256(fp.encode())
    h.update(str(start).encode())
    h.update(masks.cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _save_chunk(path: Path, params: dict[str, Tensor], buffers: dict[str, Tensor], digest: str) -> None:
    from safetensors.torch import save

    from fedleak.runio import atomic_write_bytes

    tensors = {f"param.{n}": v.detach().cpu().contiguous() for n, v in params.items()}
    tensors.update({f"buffer.{n}": v.detach().cpu().contiguous() for n, v in buffers.items()})
    atomic_write_bytes(path, save(tensors, metadata={"digest": digest}))


def _load_chunk(path: Path, digest: str, device: torch.device) -> tuple[dict, dict] | None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            if (f.metadata() or {}).get("digest") != digest:
                return None
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except Exception:  # a damaged or foreign file: retrain that chunk
        return None
    params = {k[6:]: v.to(device) for k, v in tensors.items() if k.startswith("param.")}
    buffers = {k[7:]: v.to(device) for k, v in tensors.items() if k.startswith("buffer.")}
    return params, buffers


def _init_models(model_spec: str, data_spec: DataSpec, seeds: list[int], device: torch.device) -> list[nn.Module]:
    from fedleak.models import build

    return [build(model_spec, data_spec, seed=s, device=device) for s in seeds]


def _stacked(models: list[nn.Module], kind: str) -> dict[str, Tensor]:
    """Each named parameter (``kind="parameters"``) or buffer (``"buffers"``) of the models, stacked (K, ...)."""
    per_model = [dict(getattr(m, f"named_{kind}")()) for m in models]
    return {n: torch.stack([own[n].detach() for own in per_model]) for n in per_model[0]}


@torch.no_grad()
def _steps_plain_mlp(
    layers: list[stacked_mlp.Layer],
    flat: Tensor,
    unflatten: Callable[[Tensor], dict[str, Tensor]],
    x: Tensor,
    y: Tensor,
    plan: Tensor,
    step_sizes: list[int],
    padded: list[bool],
    spec: TrainSpec,
) -> None:
    """The batch plan's steps for K plain MLPs on the flat (K, P) parameters, in place: forward and backward
    written out (:mod:`fedleak.attacks.membership.stacked_mlp`) on working copies of the parameters, one
    contiguous (K, ...) tensor per parameter (into a strided view of the flat tensor the weight gradient's
    batched matmul ran as one matmul per model), copied back into ``flat`` at the end. SGD takes each gradient
    straight into its momentum buffer (``buf = m * buf + grad`` inside the batched matmul), adds the weight decay
    and updates the parameters with one fused in-place add, as ``torch.optim.SGD`` does step for step; Adam,
    and any step where some model has no records left, go through :class:`_StackedOptimizer` on the same
    tensors. A padded step weights each model's records by 1 / its own count (padding 0).

    Input columns constant over the pool (an image's empty border) leave the big matmuls. With SGD without
    weight decay (momentum or not) they leave the step altogether: their weights' gradient is always the first
    layer's bias gradient times the constant values v, so their momentum buffer is the bias's times v and their
    change over training is the bias's change times v (exactly, in real arithmetic). The bias and those weights
    then act as one effective bias ``c = b + W_const v`` that moves by (1 + |v|^2) times the bias's step, which
    is SGD on ``c`` with its gradient scaled by (1 + |v|^2); the bias and the weights are recovered from c at
    the end. Otherwise (Adam, weight decay) their weights are kept apart (``const``) and enter as a bias at every
    step (:func:`stacked_mlp.forward`)."""
    xf = x.reshape(len(x), -1)
    xf = xf if xf.dtype == flat.dtype else xf.to(flat.dtype)
    views = unflatten(flat)
    w0 = layers[0].weight
    work = {n: v.contiguous().clone() for n, v in views.items()}  # (K, ...) each, contiguous
    same = stacked_mlp.constant_columns(xf)
    const: tuple[Tensor, Tensor] | None = None
    fold: tuple[Tensor, Tensor, Tensor, float] | None = None  # (values, bias at start, c at start, 1 + |v|^2)
    b0 = layers[0].bias
    if bool(same.any()) and not bool(same.all()):
        values, xf = xf[0, same].contiguous(), xf[:, ~same].contiguous()
        work[w0] = views[w0][:, :, ~same].contiguous()
        if spec.optimizer != "adam" and not spec.weight_decay and b0 is not None:
            start = work[b0].clone()
            w_const = views[w0][:, :, same]
            work[b0] += torch.einsum("khd,d->kh", w_const, values)  # c = b + W_const v
            fold = (values, start, work[b0].clone(), 1.0 + float(values @ values))
        else:
            const = (values, views[w0][:, :, same].contiguous())
    width = xf.shape[1]
    scale = 1.0 if fold is None else fold[3]
    params = dict(work)
    if const is not None:
        params[_CONST] = const[1]
    opt = _StackedOptimizer(params, spec)
    sgd = spec.optimizer != "adam"
    if sgd and spec.momentum:  # torch's first step sets buf = grad: the same as m * 0 + grad
        for n, t in params.items():
            opt.state[n]["buf"] = torch.zeros_like(t)
    into = {n: opt.state[n]["buf"] for n in params} if sgd and spec.momentum else None
    grads: dict[str, Tensor] | None = None
    ps = list(params.values())
    xb: Tensor | None = None
    for s, size in enumerate(step_sizes):
        idx = plan[:, s, :size]
        active = None
        if padded[s]:
            valid = idx >= 0
            idx = idx.clamp_min(0)
            weight = (valid / valid.sum(1, keepdim=True).clamp_min(1)).unsqueeze(2).to(flat.dtype)
            active = None if bool(valid.any(1).all()) else valid.any(1)
        else:
            weight = 1.0 / size
        rows = idx.reshape(-1)
        if xb is None or xb.shape[0] != rows.numel():
            xb = torch.empty(rows.numel(), width, dtype=xf.dtype, device=xf.device)
        torch.index_select(xf, 0, rows, out=xb)  # into one reused buffer: half the cost of xf[idx]
        out, kept = stacked_mlp.forward(layers, work, xb.view(*idx.shape, width), const)
        dout = stacked_mlp.cross_entropy_grad(out, y.index_select(0, rows).view(idx.shape), weight)
        if into is not None and active is None:  # SGD with momentum, every model active: the fast path
            stacked_mlp.backward(layers, work, kept, dout, into, spec.momentum, _const_into(const, into), scale)
            bufs = list(into.values())
            if spec.weight_decay:
                torch._foreach_add_(bufs, ps, alpha=spec.weight_decay)
            torch._foreach_add_(ps, bufs, alpha=-spec.lr)
            opt.t += 1
            continue
        if grads is None:
            grads = {n: torch.zeros_like(t) for n, t in params.items()}
        stacked_mlp.backward(layers, work, kept, dout, grads, 0.0, _const_into(const, grads), scale)
        opt.step(params, grads, active)
    if fold is not None:  # the bias and the constant columns' weights from c's change
        values, start, c0, scale = fold
        moved = (work[b0] - c0) / scale  # the bias's change; the weights' is that times v
        views[w0][:, :, same] += moved.unsqueeze(2) * values
        work[b0] = start + moved
    for n, v in views.items():
        if n == w0 and bool(same.any()) and not bool(same.all()):
            v[:, :, ~same] = work[w0]
            if const is not None:
                v[:, :, same] = const[1]
        else:
            v.copy_(work[n])


_CONST = "\0const"  # the working name of the first layer's weights on the constant input columns


def _const_into(const: tuple[Tensor, Tensor] | None, into: dict[str, Tensor]) -> tuple[Tensor, Tensor] | None:
    return None if const is None else (const[0], into[_CONST])


def _train_vectorised(
    models: list[nn.Module],
    x: Tensor,
    y: Tensor,
    masks: Tensor,
    spec: TrainSpec,
    seeds: list[int],
    train_mode: bool,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """All K models as one flat (K, P) parameter tensor: each step takes views of it for the forward pass,
    gets one flat gradient back and updates it with one optimiser step on one tensor (a handful of kernels
    whatever the number of parameter tensors)."""
    base = models[0]
    base.train(train_mode)
    k = masks.shape[0]
    params = _stacked(models, "parameters")
    names, stacked = list(params), list(params.values())
    shapes, numels = [t.shape[1:] for t in stacked], [t[0].numel() for t in stacked]
    flat = torch.cat([t.reshape(k, -1) for t in stacked], 1).requires_grad_(True)  # (K, P), a copy
    del stacked, params
    buffers = _stacked(models, "buffers")  # stacking copies: the models' own buffers are not touched

    def unflatten(f: Tensor) -> dict[str, Tensor]:
        return {n: t.view(k, *shape) for n, t, shape in zip(names, f.split(numels, 1), shapes, strict=True)}

    plan, step_sizes = _batch_plan(masks.cpu(), spec, seeds)
    # per step: does any model have a short (padded) batch within the step's size?
    width = torch.arange(plan.shape[2]).view(1, 1, -1) < torch.tensor(step_sizes, dtype=torch.long).view(1, -1, 1)
    padded = ((plan < 0) & width).any(2).any(0).tolist()
    plan = plan.to(x.device)
    opt = _StackedOptimizer({"flat": flat}, spec)

    def one(p: dict[str, Tensor], b: dict[str, Tensor], xb: Tensor) -> Tensor:
        return functional_call(base, (p, b), (xb,))

    many = vmap(one, in_dims=(0, 0, 0))

    def forward(f: Tensor, xb: Tensor) -> Tensor:
        return many(unflatten(f), buffers, xb)

    layers = stacked_mlp.plain_mlp(base, names)
    if layers is not None and step_sizes:  # plain MLPs: hand-written steps, if they agree with functional_call
        with torch.no_grad():
            probe = x[plan[:, 0, : step_sizes[0]].clamp_min(0)]
            mine = stacked_mlp.forward(layers, unflatten(flat), probe.flatten(2))[0]
            if torch.allclose(mine, forward(flat, probe), rtol=1e-4, atol=1e-5):
                flat = flat.detach()
                _steps_plain_mlp(layers, flat, unflatten, x, y, plan, step_sizes, padded, spec)
                return {n: t.contiguous() for n, t in unflatten(flat).items()}, buffers
    for s, size in enumerate(step_sizes):
        idx = plan[:, s, :size]
        ragged = padded[s]
        if ragged:
            valid = idx >= 0
            idx = idx.clamp_min(0)
        out, yb = forward(flat, x[idx]), y[idx]  # (K, b, C), (K, b)
        if not ragged:  # the common case: mean cross-entropy per model, summed over models
            loss = F.cross_entropy(out.flatten(0, 1), yb.flatten(), reduction="sum") / size
            (grad,) = torch.autograd.grad(loss, flat)
            opt.step({"flat": flat}, {"flat": grad}, None)
            continue
        loss = F.cross_entropy(out.flatten(0, 1), yb.flatten(), reduction="none").view(k, -1)
        w = valid.to(loss.dtype)
        per_model = (loss * w).sum(1) / w.sum(1).clamp_min(1)
        (grad,) = torch.autograd.grad(per_model.sum(), flat)
        opt.step({"flat": flat}, {"flat": grad}, valid.any(1))
    return {n: t.detach().contiguous() for n, t in unflatten(flat.detach()).items()}, buffers


def _train_sequential(
    models: list[nn.Module],
    x: Tensor,
    y: Tensor,
    masks: Tensor,
    spec: TrainSpec,
    seeds: list[int],
    train_mode: bool,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    trainer = SGDTrainer()
    for m, mask, sd in zip(models, masks, seeds, strict=True):
        m.train(train_mode)
        own = mask.nonzero().flatten().to(x.device)
        trainer.train(m, x[own], y[own], spec, torch.Generator().manual_seed(sd))
    return _stacked(models, "parameters"), _stacked(models, "buffers")


def train_references(
    model_spec: str,
    data_spec: DataSpec,
    x: Tensor,
    y: Tensor,
    masks: Tensor,
    train_spec: TrainSpec,
    seed: int = 0,
    device: str | torch.device = "cpu",
    checkpoint_dir: str | Path | None = None,
    vectorised: bool = True,
    *,
    first: int = 0,
    chunk: int | None = None,
    train_mode: bool = True,
    pool_ids: Tensor | None = None,
    on_chunk: Callable[[int, int], None] | None = None,
) -> ReferenceModels:
    """Train one model per row of ``masks`` (K, N) on the pool records (x, y) that row selects.

    ``first`` is the global index of the first model (for chunks of a larger set run elsewhere: model k always
    gets seed ``model_seed(seed, first + k)``); ``chunk`` trains and checkpoints that many models at a time
    (default: all at once); ``on_chunk(done, total)`` reports progress.
    """
    dev = resolve_device(device)
    masks = torch.as_tensor(masks, dtype=torch.bool).cpu()
    if masks.dim() != 2 or masks.shape[1] != len(x) or len(x) != len(y):
        raise FedleakInputError(f"masks must be (K, {len(x)}) for {len(x)} pool records, got {tuple(masks.shape)}")
    if int(masks.sum(1).min()) < 1:
        raise FedleakInputError("every reference model needs at least one training record")
    x, y = x.to(dev), y.to(dev)
    k_total = masks.shape[0]
    step = chunk or k_total
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    fp = _fingerprint(model_spec, data_spec, x, y, train_spec, seed, train_mode) if ckpt is not None else ""
    train = _train_vectorised if vectorised else _train_sequential
    parts: list[ReferenceModels] = []
    for a in range(0, k_total, step):
        b = min(k_total, a + step)
        seeds = [model_seed(seed, first + j) for j in range(a, b)]
        t0 = time.perf_counter()
        loaded = None
        if ckpt is not None:
            digest = _chunk_digest(fp, masks[a:b], first + a)
            path = ckpt / f"refs-{fp}-{first + a:05d}-{first + b:05d}.safetensors"
            loaded = _load_chunk(path, digest, dev) if path.exists() else None
        if loaded is None:
            models = _init_models(model_spec, data_spec, seeds, dev)
            params, buffers = train(models, x, y, masks[a:b], train_spec, seeds, train_mode)
            if ckpt is not None:
                _save_chunk(path, params, buffers, digest)
            seconds = time.perf_counter() - t0
        else:
            (params, buffers), seconds = loaded, 0.0
        parts.append(ReferenceModels(model_spec, data_spec, params, buffers, masks[a:b], pool_ids, seconds))
        if on_chunk is not None:
            on_chunk(b, k_total)
    return parts[0] if len(parts) == 1 else ReferenceModels.concat(parts)
