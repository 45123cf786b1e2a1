"""The written-out chain objective (chain.py): equal to autograd's double backward wherever it claims a network,
refusing every network it does not cover, and taken by the engine only where it agrees with vmap."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

import fedleak
from fedleak.attacks.inversion import invert_batch
from fedleak.attacks.inversion.chain import ChainMatch
from fedleak.attacks.inversion.replay import fedsgd_gradient
from fedleak.data.dataset import DataSpec
from fedleak.fl import client_update

# a small RGB format with its own normalisation, so that LeNet's input affine map is not the identity
SPEC = DataSpec("rgb", "image", (3, 12, 12), 5, tuple("abcde"), (0.5, 0.4, 0.3), (0.25, 0.2, 0.3))


def reference(module, theta, consts, x, labels, target, shared):
    """Each problem's squared distance and its gradients by autograd's double backward, one problem at a time."""
    vals, gxs, gys = [], [], []
    for i in range(x.shape[0]):
        xi = x[i].detach().requires_grad_(True)
        yi = labels[i].detach().requires_grad_(labels.is_floating_point())
        th = theta if shared else {k: v[i] for k, v in theta.items()}
        g = fedsgd_gradient(module, th, consts, xi, yi)
        f = sum(((g[k] - target[k][i]) ** 2).sum() for k in g)
        grads = torch.autograd.grad(f, [xi, yi] if labels.is_floating_point() else [xi])
        vals.append(f.detach())
        gxs.append(grads[0])
        gys.append(grads[1] if len(grads) > 1 else None)
    return torch.stack(vals), torch.stack(gxs), None if gys[0] is None else torch.stack(gys)


def odd_convnet() -> nn.Module:
    """Geometry the LeNet does not exercise: no padding, dilation, a rectangular kernel and stride, a layer
    without bias, an identity between layers, tanh and relu."""
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, dilation=2),
        nn.Tanh(),
        nn.Conv2d(4, 5, (3, 2), stride=(2, 1), padding=(1, 0), bias=False),
        nn.ReLU(),
        nn.Conv2d(5, 3, 1),
        nn.Identity(),
        nn.Flatten(),
        nn.Linear(3 * 4 * 7, 6, bias=False),
        nn.Sigmoid(),
        nn.Linear(6, 5),
    )


MODELS = {
    "lenet": lambda: fedleak.models.build("lenet", SPEC, seed=0),
    "mlp tanh": lambda: fedleak.models.build("mlp:20,act=tanh", SPEC, seed=0),
    "mlp relu": lambda: fedleak.models.build("mlp:20,12,act=relu", SPEC, seed=0),
    "mlp sigmoid": lambda: fedleak.models.build("mlp:16,act=sigmoid", SPEC, seed=0),
    "odd convnet": odd_convnet,
}


@pytest.mark.parametrize("name", list(MODELS))
def test_chain_equals_autograds_double_backward(name):
    # float64, 3 problems, 1 and 3 records each, each problem its own weights or one set for all, class indices
    # or DLG's label logits: value, gradient in the records and in the label logits equal to rounding (1e-15
    # relative seen; 1e-10 leaves room for other BLAS orders and still catches any missing term, each of which
    # changes the gradient at order 1)
    torch.manual_seed(0)
    module = MODELS[name]().double()
    chain = ChainMatch.from_module(module)
    assert chain is not None
    params = dict(module.named_parameters())
    assert chain.names() == list(params)
    consts = dict(module.named_buffers())
    for shared, soft, n in itertools.product([True, False], [False, True], [1, 3]):
        p = 3
        theta = (
            {k: v.detach() for k, v in params.items()}
            if shared
            else {k: v.detach() + 0.1 * torch.randn(p, *v.shape, dtype=v.dtype) for k, v in params.items()}
        )
        x = torch.randn(p, n, *SPEC.shape, dtype=torch.float64)
        labels = torch.randn(p, n, 5, dtype=torch.float64) if soft else torch.randint(0, 5, (p, n))
        target = {k: 0.1 * torch.randn(p, *v.shape, dtype=v.dtype) for k, v in params.items()}
        ours = chain(x, labels, theta, consts, target, shared)
        ref = reference(module, theta, consts, x, labels, target, shared)
        assert (ours[2] is None) == (not soft)
        for a, b in zip(ours, ref, strict=True):
            if b is not None:
                assert float((a - b).abs().max()) <= 1e-10 * float(b.abs().max()), (name, shared, soft, n)


def test_chain_refuses_what_it_does_not_write_out():
    image = fedleak.models.build("convnet:8", SPEC, seed=0)  # BatchNorm: batch statistics
    pooled = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sigmoid(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(100, 5))
    grouped = nn.Sequential(nn.Conv2d(3, 6, 3, groups=3), nn.Flatten(), nn.Linear(600, 5))
    gelu = nn.Sequential(nn.Flatten(), nn.Linear(432, 8), nn.GELU(), nn.Linear(8, 5))
    two_acts = nn.Sequential(nn.Flatten(), nn.Linear(432, 8), nn.Sigmoid(), nn.ReLU(), nn.Linear(8, 5))
    soft_logits = nn.Sequential(nn.Flatten(), nn.Linear(432, 5), nn.Sigmoid())  # the logits pass an activation
    conv_after_linear = nn.Sequential(nn.Linear(12, 12), nn.Conv2d(3, 3, 1), nn.Flatten(), nn.Linear(432, 5))
    last_conv = nn.Sequential(nn.Conv2d(3, 5, 12), nn.Flatten())  # logits from a convolution

    class Skip(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(432, 432), nn.Linear(432, 5)

        def forward(self, x):
            x = x.flatten(1)
            return self.b(x + torch.sigmoid(self.a(x)))

    for m in (image, pooled, grouped, gelu, two_acts, soft_logits, conv_after_linear, last_conv, Skip()):
        assert ChainMatch.from_module(m) is None, m
    assert ChainMatch.from_module(odd_convnet()) is not None


@pytest.fixture(scope="module")
def digits():
    return fedleak.data.load("digits")


def test_engine_takes_the_chain_only_where_it_agrees(digits, monkeypatch):
    import fedleak.attacks.inversion.chain as chain_module

    ups = [client_update(fedleak.models.build("lenet", digits.spec, seed=0), digits.subset([i])) for i in (0, 1, 2)]
    ok = invert_batch(ups, "idlg", iterations=3, restarts=1, seed=0)
    assert all(r.extras["engine"] == "chain" for r in ok)
    real = chain_module.ChainMatch.__call__

    def off_by_one_percent(self, *args, **kw):
        val, gx, gy = real(self, *args, **kw)
        return val, 1.01 * gx, gy

    monkeypatch.setattr(chain_module.ChainMatch, "__call__", off_by_one_percent)
    wrong = invert_batch(ups, "idlg", iterations=3, restarts=1, seed=0)
    monkeypatch.setattr(chain_module.ChainMatch, "from_module", classmethod(lambda cls, m: None))
    without = invert_batch(ups, "idlg", iterations=3, restarts=1, seed=0)
    for a, b in zip(wrong, without, strict=True):
        assert a.extras["engine"] == b.extras["engine"] == "stacked"  # 3 problems: the stacked graph, as before
        assert torch.equal(a.inputs, b.inputs)  # the wrong gradient never moved a problem


def test_engine_takes_the_chain_with_tv_and_the_image_prior_beside_it(digits):
    # both terms by autograd in the records beside the written-out distance; weighted so that either, left out or
    # wrong, moves the objective far beyond the agreement check's 1e-3 and the engine would fall back to vmap
    from fedleak.attacks.inversion.image_prior import fit_gaussian_prior

    prior = fit_gaussian_prior(digits.spec.normalize(digits.pixels(list(range(100, 400)))))
    ups = [client_update(fedleak.models.build("lenet", digits.spec, seed=0), digits.subset([i, i + 1])) for i in (0, 2)]
    with_tv = invert_batch(ups, "idlg", iterations=2, restarts=1, seed=0, tv=1e3)
    with_prior = invert_batch(ups, "idlg", iterations=2, restarts=1, seed=0, image_prior=prior, prior_weight=1.0)
    assert all(r.extras["engine"] == "chain" for r in with_tv + with_prior)
    assert all(r.extras["image_prior"] is not None for r in with_prior)


def test_chain_in_float32_near_a_solution_is_as_accurate_as_autograd():
    # near a solution the replayed gradient nearly equals the update and float32 keeps few digits of their
    # difference; on lfw-faces' LeNet (2 classes, the model sure of most records) the true class's p - 1, computed
    # as it reads, doubled the gradient's error against float64 (1.5e-3 against vmap's 6.8e-4); computed as minus
    # the other classes' sum, it is vmap's (6.9e-4). 1.25x leaves room for rounding in another order.
    from torch.func import vmap

    from fedleak.attacks.inversion.objectives import l2_distance

    torch.manual_seed(0)
    data = fedleak.data.load("lfw-faces")
    idx = list(range(0, 80, 10))
    mods = [fedleak.models.build("lenet:input=normalised", data.spec, seed=k) for k in range(len(idx))]
    ups = [client_update(m, data.subset([i]), batch_size=1) for m, i in zip(mods, idx, strict=True)]
    names = [n for n, _ in mods[0].named_parameters()]
    consts = {k: v.double() for k, v in mods[0].named_buffers()}
    theta = {n: torch.stack([dict(m.named_parameters())[n].detach() for m in mods]).double() for n in names}
    target = {n: torch.stack([u.payload[n] for u in ups]).double() for n in names}
    xs, ys = data.tensors(idx)
    x = xs.double()[:, None] + 1e-3 * torch.randn(len(idx), 1, *xs.shape[1:], dtype=torch.float64)
    y = ys[:, None]
    chain = ChainMatch.from_module(mods[0])
    exact = chain(x, y, theta, consts, target, False)[1]

    def f32(d):
        return {k: v.float() for k, v in d.items()}

    ours = chain(x.float(), y, f32(theta), f32(consts), f32(target), False)[1]
    module = mods[0].float()

    def objective(xi, yi, th, t):
        g = fedsgd_gradient(module, th, f32(consts), xi, yi)
        return l2_distance([g[k] for k in names], [t[k] for k in names])

    xg = x.float().requires_grad_(True)
    (autograd,) = torch.autograd.grad(vmap(objective)(xg, y, f32(theta), f32(target)).sum(), [xg])

    def error(g):
        return float(((g.double() - exact).flatten(1).norm(dim=1) / exact.flatten(1).norm(dim=1)).median())

    assert error(ours) <= 1.25 * error(autograd)
