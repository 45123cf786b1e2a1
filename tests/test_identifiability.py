"""The structural bound on what an update can determine (fedleak.attacks.inversion.identifiability): checked
against the numerical rank of the update's Jacobian with respect to the records, which it must never exceed."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, jacrev

from fedleak.attacks.inversion.identifiability import for_update, rank_bound
from fedleak.data.dataset import DataSpec
from fedleak.fl import client_update
from fedleak.models import build


def _small_conv() -> nn.Module:
    # 1x8x8 -> 2x4x4 -> 2x2x2 -> 3 classes: the second convolution's output (8 numbers) is a narrow cut
    return nn.Sequential(
        nn.Conv2d(1, 2, 3, stride=2, padding=1),
        nn.Sigmoid(),
        nn.Conv2d(2, 2, 3, stride=2, padding=1),
        nn.Sigmoid(),
        nn.Flatten(),
        nn.Linear(8, 3),
    ).double()


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 6), nn.Sigmoid(), nn.Linear(6, 3)).double()


def _jacobian_rank(net: nn.Module, batch: int) -> int:
    params = {k: v.detach() for k, v in net.named_parameters()}
    y = torch.arange(batch) % 3

    def flat_gradient(x: torch.Tensor) -> torch.Tensor:
        g = grad(lambda p: nn.functional.cross_entropy(functional_call(net, p, (x,)), y))(params)
        return torch.cat([v.flatten() for v in g.values()])

    x = torch.randn(batch, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(batch))
    return int(torch.linalg.matrix_rank(jacrev(flat_gradient)(x).reshape(-1, x.numel())))


@pytest.mark.parametrize("make", [_small_conv, _mlp])
@pytest.mark.parametrize("batch", [1, 2, 3])
def test_bound_never_below_the_numerical_rank(make, batch: int) -> None:
    torch.manual_seed(0)
    net = make()
    bound = rank_bound(net, (1, 8, 8), batch)
    assert bound is not None
    rank = _jacobian_rank(net, batch)
    assert rank <= bound.rank_bound
    if bound.determined:  # the MLP's first layer carries every record (its gradient is delta x^T): all of it
        assert rank == bound.unknowns
    else:  # the small convnet: the bound proves directions invisible, and the Jacobian has them
        assert rank < bound.unknowns


def _cifar_spec() -> DataSpec:
    return DataSpec("cifar", "image", (3, 32, 32), 10, tuple("abcdefghij"), (0.5,) * 3, (0.25,) * 3)


def test_dlg_lenet_on_cifar_shapes() -> None:
    """The figures of the module docstring: 768 B + 4,524 through the second convolution, so B = 1 is
    determined and B = 4 leaves at least 4,692 of 12,288 directions invisible."""
    spec = _cifar_spec()
    net = build("lenet", spec, seed=0)
    assert rank_bound(net, (3, 32, 32), 1).determined
    b4 = rank_bound(net, (3, 32, 32), 4)
    assert (b4.unknowns, b4.rank_bound, b4.null_dims) == (12288, 768 * 4 + 4524, 4692)
    assert "body.2" in b4.cut and "no attack can rebuild" in b4.sentence()
    assert rank_bound(build("resnet20", spec, seed=0), (3, 32, 32), 1) is None  # residual: not a chain


def test_fedavg_steps_add_up() -> None:
    """A FedAvg delta of S steps carries at most S times one step's bound; read off the update's own facts."""
    spec = _cifar_spec()
    net = build("lenet", spec, seed=0)
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([1, 2, 3, 4])
    u = client_update(net, (x, y), local_steps=2, batch_size=2, lr=0.01)
    u = dataclasses.replace(u, data_spec=spec)
    b = for_update(u, 4)
    one = rank_bound(net, (3, 32, 32), 2)
    assert b is not None and b.local_steps == 2 and b.rank_bound == min(b.unknowns, 2 * one.rank_bound)
    assert b.rank_bound == 2 * (768 * 2 + 4524) < 12288
