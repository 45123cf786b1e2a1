"""Gradient distances and image priors: pure tensor functions, shared by every optimisation attack (and by
text inversion, which imports them).

Each distance takes two sequences of tensors (the dummy gradient and the observed one, parameter by
parameter) and returns one value per problem: with ``batch_dims=1`` the leading dimension of every tensor
indexes independent problems (targets, restarts) and the result has that shape; with ``batch_dims=0``
(the default, e.g. inside ``torch.func.vmap``) it is a scalar.

    >>> import torch
    >>> g = [torch.ones(2, 3), torch.ones(2)]
    >>> float(l2_distance(g, g)), abs(round(float(cosine_distance(g, [2 * t for t in g])), 6))
    (0.0, 0.0)
    >>> l2_distance([torch.zeros(4, 3)], [torch.ones(4, 3)], batch_dims=1).tolist()
    [3.0, 3.0, 3.0, 3.0]

Add your own with ``@DISTANCES.register("name")``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from fedleak.registry import Registry

Distance = Callable[..., Tensor]
DISTANCES: Registry[Distance] = Registry("gradient distance")


def _per_problem(t: Tensor, batch_dims: int) -> Tensor:
    return t.flatten(batch_dims).sum(-1) if t.dim() > batch_dims else t


@DISTANCES.register("l2", "squared L2 distance summed over parameters (DLG)")
def l2_distance(grads: Sequence[Tensor], target: Sequence[Tensor], batch_dims: int = 0) -> Tensor:
    """Sum over parameters of the squared L2 distance (Zhu et al. 2019)."""
    return sum(_per_problem((g - t).pow(2), batch_dims) for g, t in zip(grads, target, strict=True))  # type: ignore[return-value]


@DISTANCES.register("cosine", "1 - cosine similarity of the whole gradient (Inverting Gradients)")
def cosine_distance(
    grads: Sequence[Tensor], target: Sequence[Tensor], batch_dims: int = 0, eps: float = 1e-12
) -> Tensor:
    """1 - <g, t> / (|g| |t|) with all parameters taken as one vector (Geiping et al. 2020)."""
    dot = sum(_per_problem(g * t, batch_dims) for g, t in zip(grads, target, strict=True))
    gg = sum(_per_problem(g * g, batch_dims) for g in grads)
    tt = sum(_per_problem(t * t, batch_dims) for t in target)
    return 1 - dot / (gg.sqrt() * tt.sqrt() + eps)  # type: ignore[union-attr]


@DISTANCES.register("tag", "squared L2 + alpha * L1 distance (TAG, Deng et al. 2021)")
def tag_distance(grads: Sequence[Tensor], target: Sequence[Tensor], batch_dims: int = 0, alpha: float = 0.01) -> Tensor:
    """TAG's distance: sum over parameters of |g - t|^2 + alpha * |g - t|_1."""
    out = 0
    for g, t in zip(grads, target, strict=True):
        d = g - t
        out = out + _per_problem(d.pow(2), batch_dims) + alpha * _per_problem(d.abs(), batch_dims)
    return out  # type: ignore[return-value]


def total_variation(x: Tensor, batch_dims: int = 0) -> Tensor:
    """Mean absolute difference of neighbouring pixels along H and W of (..., C, H, W) images, summed over the
    images of one problem (Inverting Gradients' TV prior).

        >>> float(total_variation(torch.ones(2, 3, 4, 4)))
        0.0
    """
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs()
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs()
    per_image = dx.flatten(-3).mean(-1) + dy.flatten(-3).mean(-1)
    return _per_problem(per_image, batch_dims)


def as_list(grads: dict[str, Tensor] | Sequence[Tensor], names: Sequence[str] | None = None) -> list[Tensor]:
    """A dict of per-parameter tensors in ``names`` order (or a sequence as is)."""
    if isinstance(grads, dict):
        return [grads[n] for n in (names or list(grads))]
    return list(grads)


__all__ = ["DISTANCES", "as_list", "cosine_distance", "l2_distance", "tag_distance", "total_variation"]
_ = torch  # torch is used in doctests
