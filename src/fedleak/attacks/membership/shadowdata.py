"""Where Shokri's shadow models get their training data (Shokri et al. 2017, section V.C):

- ``population``: records from the same distribution that the target never saw;
- ``noisy``: noisy copies of a few real records (a fraction of each copy's features re-drawn at random);
- ``synthetic``: model-based synthesis, Shokri's hill climbing that queries the target for records it
  classifies with high confidence, one class at a time. All candidates climb together as one batch.

Random features are drawn in the space the model sees: uniform [0, 1] pixels normalised for images,
standard normal for (standardised) tables.

    >>> import torch
    >>> from fedleak.data import load
    >>> spec = load("digits").spec
    >>> feature_sampler(spec)(3, torch.Generator().manual_seed(0)).shape
    torch.Size([3, 1, 8, 8])
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from fedleak.data.dataset import DataSpec
from fedleak.errors import FedleakInputError
from fedleak.registry import Registry

Sampler = Callable[[int, torch.Generator], Tensor]


def feature_sampler(spec: DataSpec) -> Sampler:
    """Random records (n, *shape) of independent random features, in model-input space."""
    if spec.modality == "image":
        return lambda n, g: spec.normalize(torch.rand(n, *spec.shape, generator=g))
    if spec.modality == "table":
        return lambda n, g: torch.randn(n, *spec.shape, generator=g)
    raise FedleakInputError(f"{spec.name}: shadow data synthesis needs image or table records")


def noisy_copies(
    x: Tensor,
    y: Tensor,
    count: int,
    sampler: Sampler,
    generator: torch.Generator,
    seeds: int = 0,
    flip: float = 0.1,
) -> tuple[Tensor, Tensor]:
    """``count`` copies of ``seeds`` records (default: one in ten), ``flip`` of their features re-drawn."""
    seeds = seeds or max(1, len(x) // 10)
    pick = torch.randperm(len(x), generator=generator)[:seeds]
    src = pick[torch.randint(len(pick), (count,), generator=generator)]
    base = x[src].clone()
    flat = base.flatten(1)
    fresh = sampler(count, generator).to(x.device).flatten(1)
    change = (torch.rand(flat.shape, generator=generator) < flip).to(x.device)
    flat = torch.where(change, fresh, flat)
    return flat.view_as(base), y[src].clone()


@torch.no_grad()
def hill_climb(
    query: Callable[[Tensor], Tensor],
    num_classes: int,
    count: int,
    sampler: Sampler,
    generator: torch.Generator,
    *,
    k_max: int | None = None,
    k_min: int = 1,
    conf_min: float = 0.5,
    rej_max: int = 10,
    iterations: int = 300,
) -> tuple[Tensor, Tensor]:
    """Shokri's Algorithm 1 for ``count`` records at once (classes in turn): change k random features, keep
    the change when the target's confidence in the class does not drop, halve k after ``rej_max`` rejections
    in a row, and accept a record once the target puts it in its class with confidence above ``conf_min``
    (with probability equal to that confidence). ``query`` maps inputs to probabilities."""
    cls = torch.arange(count) % num_classes
    x = sampler(count, generator)
    feats = x[0].numel()
    k_max = k_max or max(1, feats // 4)
    best_x, best_c = x.clone(), torch.zeros(count)
    k = torch.full((count,), k_max)
    rejects = torch.zeros(count, dtype=torch.long)
    done = torch.zeros(count, dtype=torch.bool)
    for _ in range(iterations):
        p = query(x).float().cpu()
        c = p.gather(1, cls.view(-1, 1)).squeeze(1)
        better = (c >= best_c) & ~done
        ok = better & (c > conf_min) & (p.argmax(1) == cls) & (torch.rand(count, generator=generator) < c)
        done |= ok
        best_x[better] = x[better]
        best_c = torch.where(better, c, best_c)
        rejects = torch.where(better, torch.zeros_like(rejects), rejects + 1)
        shrink = rejects > rej_max
        k = torch.where(shrink, (k // 2).clamp_min(k_min), k)
        rejects[shrink] = 0
        if bool(done.all()):
            break
        # propose: re-draw k random features of the best record so far
        flat = best_x.flatten(1).clone()
        order = torch.rand(flat.shape, generator=generator).argsort(1)
        change = order < k.view(-1, 1)
        fresh = sampler(count, generator).flatten(1)
        x = torch.where(change, fresh, flat).view_as(best_x)
        x[done] = best_x[done]
    return best_x, cls


ShadowSource = Callable[..., tuple[Tensor, Tensor]]
SHADOW_DATA: Registry[ShadowSource] = Registry("shadow data source")


@SHADOW_DATA.register("population", "records from the data distribution that the target never saw")
def _population(ctx, generator: torch.Generator, count: int | None = None, **_: object) -> tuple[Tensor, Tensor]:  # noqa: ANN001
    pop = ctx.need_population("Shokri's attack with --shadow-data population", least=4)
    return pop.x, pop.y


@SHADOW_DATA.register("noisy", "noisy copies of a few population records (features re-drawn at 10%)")
def _noisy(
    ctx,
    generator: torch.Generator,
    count: int | None = None,
    flip: float = 0.1,
    seeds: int = 0,  # noqa: ANN001
    **_: object,
) -> tuple[Tensor, Tensor]:
    pop = ctx.need_population("Shokri's attack with --shadow-data noisy", least=1)
    return noisy_copies(
        pop.x.cpu(),
        pop.y.cpu(),
        count or len(pop),
        feature_sampler(ctx.data_spec),
        generator,
        seeds=seeds,
        flip=flip,
    )


@SHADOW_DATA.register("synthetic", "records synthesised by hill climbing on the target's confidence")
def _synthetic(
    ctx,
    generator: torch.Generator,
    count: int | None = None,
    iterations: int = 300,  # noqa: ANN001
    conf_min: float = 0.5,
    **_: object,
) -> tuple[Tensor, Tensor]:
    spec = ctx.data_spec
    if spec is None:
        raise FedleakInputError("synthetic shadow data needs data_spec= (record shape and classes)")
    n = count or (len(ctx.population) if ctx.population is not None else len(ctx.records))
    return hill_climb(
        lambda x: ctx.query(x).softmax(-1),
        spec.num_classes,
        n,
        feature_sampler(spec),
        generator,
        iterations=iterations,
        conf_min=conf_min,
    )
