"""How much of a batch an update can determine at all: an upper bound on the rank of the update's Jacobian
with respect to the records, from the model's structure alone (no optimisation, no data).

For a model that runs as a chain of layers, cut it after any layer k whose output has ``s_k`` numbers per
record: every parameter after the cut receives a gradient that depends on the records only through the B
outputs at the cut (B * s_k numbers, and never more than those parameters' count); the parameters up to the cut
carry at most their own count. So for every cut,

    rank d(gradient)/d(records) <= min(B * s_k, P_after_k) + P_upto_k,

and the least of these over the cuts bounds what any attack can read. Where the bound is below B * D (D the
numbers per record), at least B * D minus the bound directions of the batch leave the gradient unchanged to
first order: the update does not determine the batch, and a reconstruction is the prior's guess along them.
A FedAvg update of S local steps is a function of the S steps' mini-batch gradients (each step's weights are
functions of the earlier gradients), so its rank is at most the sum of the steps' bounds.

Example: DLG's LeNet on 3x32x32 images (cut after the second convolution, 768 numbers per record, 4,524
parameters up to it): at most 768 B + 4,524 of the 3,072 B pixel values; B = 1 is determined (3,072 of 3,072),
from B = 2 on it is not (at B = 4 at least 4,692 of 12,288 directions are invisible).

    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8, 2), torch.nn.Sigmoid(), torch.nn.Linear(2, 3))
    >>> b = rank_bound(net, (8,), batch_size=4)
    >>> (b.unknowns, b.rank_bound, b.determined)  # 4 x 8 pixels; at most 4 x 2 through the hidden layer + 18
    (32, 26, False)

The bound needs the model to be a chain (each layer fed only by the one before); for anything else
(residual connections, branches) :func:`rank_bound` returns None rather than a number it cannot vouch for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fedleak.fl.update import ClientUpdate


@dataclass(frozen=True)
class Identifiability:
    """What the structure of the model allows an update of ``batch_size`` records to determine."""

    batch_size: int
    per_record: int  # numbers per record D (pixels, features)
    unknowns: int  # B * D
    rank_bound: int  # an upper bound on the rank of d(update) / d(records)
    cut: str  # the layer at which the bound is taken ("" for the parameter count alone)
    local_steps: int = 1

    @property
    def null_dims(self) -> int:
        """At least this many directions of the batch leave the update unchanged to first order."""
        return max(0, self.unknowns - self.rank_bound)

    @property
    def determined(self) -> bool:
        """False when the structure alone proves the batch undetermined; True means only "not ruled out"."""
        return self.null_dims == 0

    def sentence(self) -> str:
        where = f" (cut after {self.cut})" if self.cut else ""
        if self.determined:
            return (
                f"the update can carry all {self.unknowns:,} numbers of the batch{where}: "
                "exact recovery is not ruled out by the model's structure"
            )
        return (
            f"the update carries at most {self.rank_bound:,} independent numbers about the {self.unknowns:,} of "
            f"the batch{where}: at least {self.null_dims:,} directions are invisible to it, so no attack can "
            "rebuild this batch from it without a prior, and what comes back along them is the prior's guess"
        )

    def to_dict(self) -> dict:
        return {
            "batch_size": self.batch_size,
            "per_record": self.per_record,
            "unknowns": self.unknowns,
            "rank_bound": self.rank_bound,
            "null_dims": self.null_dims,
            "determined": self.determined,
            "cut": self.cut,
            "local_steps": self.local_steps,
        }


@dataclass
class _Layer:
    name: str
    kind: str  # the layer's class name
    params: int  # its own parameters (trainable)
    out_per_record: int
    chained: bool  # its input is the previous layer's output (or the model's input for the first)


def _trace(model: nn.Module, in_shape: tuple[int, ...], dtype: torch.dtype | None = None) -> list[_Layer] | None:
    """The leaf layers in execution order with their output sizes; None when a leaf runs twice."""
    leaves = [(n, m) for n, m in model.named_modules() if not any(True for _ in m.children())]
    seen: list[tuple[str, nn.Module, Tensor, Tensor]] = []
    hooks = []

    def hook(name: str):  # noqa: ANN202
        def run(mod: nn.Module, inp: tuple, out: object) -> None:
            if isinstance(out, Tensor) and inp and isinstance(inp[0], Tensor):
                seen.append((name, mod, inp[0], out))

        return run

    for name, mod in leaves:
        hooks.append(mod.register_forward_hook(hook(name)))
    p = next(model.parameters(), None)
    x = torch.rand((2, *in_shape), dtype=dtype or (p.dtype if p is not None else torch.float32))
    if p is not None:
        x = x.to(p.device)
    was = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    names = [s[0] for s in seen]
    if len(set(names)) != len(names):
        return None
    layers, prev = [], None
    for name, mod, inp, out in seen:
        own = sum(q.numel() for q in mod.parameters(recurse=False) if q.requires_grad)
        # the input is the previous layer's output (the same storage: flatten and view keep it)
        chained = prev is None or (inp.untyped_storage().data_ptr() == prev.untyped_storage().data_ptr())
        layers.append(_Layer(name, type(mod).__name__, own, out[0].numel(), chained))
        prev = out
    return layers


def rank_bound(
    model: nn.Module,
    in_shape: tuple[int, ...],
    batch_size: int,
    local_steps: int = 1,
    local_batch_size: int | None = None,
    parts: int = 1,
) -> Identifiability | None:
    """The bound of the module docstring for an update of ``batch_size`` records (FedAvg: ``local_steps`` steps on
    mini-batches of ``local_batch_size``), or for the sum of ``parts`` such updates (secure aggregation); None when
    ``model`` is not a chain of layers."""
    layers = _trace(model, tuple(in_shape))
    if not layers or not all(lay.chained for lay in layers):
        return None
    total = sum(q.numel() for q in model.parameters() if q.requires_grad)
    if total != sum(lay.params for lay in layers):  # parameters used outside the leaves' forward
        return None
    d = math.prod(in_shape)
    b = max(1, min(local_batch_size or batch_size, batch_size))
    best, cut, upto = total, "", 0
    for lay in layers:
        upto += lay.params
        after = total - upto
        bound = min(b * lay.out_per_record, after) + upto
        if bound < best:
            best, cut = bound, f"{lay.name} ({lay.kind}, {lay.out_per_record:,} numbers per record)"
    steps = max(1, local_steps)
    unknowns = parts * batch_size * d
    if parts * steps * best >= unknowns:
        cut = ""
    return Identifiability(parts * batch_size, d, unknowns, min(unknowns, parts * steps * best), cut, steps)


def for_update(update: ClientUpdate, records: int | None = None) -> Identifiability | None:
    """The bound for what ``update`` (of ``records`` records in all, default its ``num_samples``; a secure sum's
    records are shared equally by its ``num_clients``) can determine, from its
    model spec and data format; None where it is not known (no spec, no record count, not a chain)."""
    from fedleak.models import build

    n = records if records is not None else update.num_samples
    if update.data_spec is None or n is None or not isinstance(update.model, str):
        return None
    try:
        model = build(update.model, update.data_spec, seed=0)
    except Exception:  # noqa: BLE001 - a model the server cannot rebuild has no bound, not an error
        return None
    k = max(1, update.num_clients)
    shape = tuple(update.data_spec.shape)
    if update.kind != "delta":  # a sum of K clients' gradients is (up to scale) the gradient of their records
        return rank_bound(model, shape, int(n))
    mini = int(update.batch_size) if update.batch_size else None
    return rank_bound(model, shape, max(1, int(n) // k), int(update.local_steps or 1), mini, parts=k)


__all__ = ["Identifiability", "for_update", "rank_bound"]
