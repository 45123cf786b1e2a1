"""The hand-written trainer of K plain MLPs (attacks/membership/stacked_mlp.py, used by train_references) trains
the same models as one-after-another torch training: its gradients are autograd's, and the models it returns
equal the sequential path's to float tolerance, with momentum, weight decay, Adam, ragged batch plans and input
columns that are constant over the pool. Speed itself is measured in bench/mia.py, not here."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import fedleak
from fedleak.attacks.membership import balanced_masks, stacked_mlp, train_references
from fedleak.data.dataset import DataSpec
from fedleak.fl import TrainSpec

# float32 training of a few dozen steps: the two paths sum in different orders (batched matmuls vs autograd's
# matmuls), ~1e-7 relative per step; 1e-5 absolute on weights of size ~0.1-1 is far below any real difference
# (one step of lr 0.05 moves weights by ~1e-3)
ATOL = 1e-5


def _stacked_params(models):
    return {
        n: torch.stack([dict(m.named_parameters())[n].detach() for m in models])
        for n, _ in models[0].named_parameters()
    }


@pytest.mark.parametrize("spec", ["mlp:7", "mlp:6,5,act=relu", "mlp:6,act=sigmoid"])
def test_forward_and_backward_are_autograds(spec):
    """The written-out gradient of K models' mean cross-entropy equals autograd's, with and without columns
    moved out as constants (their weights as a bias, their gradient as an outer product)."""
    data_spec = DataSpec("toy", "table", (9,), 4, ("a", "b", "c", "d"), (0.0,) * 9, (1.0,) * 9)
    models = [fedleak.models.build(spec, data_spec, seed=s) for s in range(3)]
    layers = stacked_mlp.plain_mlp(models[0])
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 9, generator=g)
    x[:, :, [2, 7]] = torch.tensor([0.5, -1.5])  # two columns constant in every record
    y = torch.randint(0, 4, (3, 5), generator=g)
    loss = sum(F.cross_entropy(m(x[k]), y[k]) for k, m in enumerate(models))
    loss.backward()
    want = {
        n: torch.stack([dict(m.named_parameters())[n].grad for m in models]) for n, _ in models[0].named_parameters()
    }
    p = _stacked_params(models)
    w0 = layers[0].weight

    out, kept = stacked_mlp.forward(layers, p, x)
    got = {n: torch.full_like(t, float("nan")) for n, t in p.items()}  # beta 0 must overwrite, even NaN
    stacked_mlp.backward(layers, p, kept, stacked_mlp.cross_entropy_grad(out, y, 1 / 5), got)
    for n in want:
        assert torch.allclose(got[n], want[n], atol=1e-6), n

    same = stacked_mlp.constant_columns(x.flatten(0, 1))
    assert same.nonzero().flatten().tolist() == [2, 7]
    pv = {**p, w0: p[w0][:, :, ~same]}
    const = (x[0, 0, same], p[w0][:, :, same])
    out2, kept2 = stacked_mlp.forward(layers, pv, x[:, :, ~same], const)
    assert torch.allclose(out2, out, atol=1e-6)
    got2 = {n: torch.zeros_like(t) for n, t in pv.items()}
    into_const = torch.zeros_like(const[1])
    dout = stacked_mlp.cross_entropy_grad(out2, y, 1 / 5)
    stacked_mlp.backward(layers, pv, kept2, dout, got2, 0.0, (const[0], into_const))
    assert torch.allclose(got2[w0], want[w0][:, :, ~same], atol=1e-6)
    assert torch.allclose(into_const, want[w0][:, :, same], atol=1e-6)


def test_plain_mlp_refuses_what_it_cannot_write_out():
    spec = DataSpec("toy", "table", (9,), 4, ("a", "b", "c", "d"), (0.0,) * 9, (1.0,) * 9)
    assert stacked_mlp.plain_mlp(fedleak.models.build("mlp", spec)) is not None
    net = torch.nn.Sequential(torch.nn.Linear(9, 5), torch.nn.BatchNorm1d(5), torch.nn.Linear(5, 4))
    assert stacked_mlp.plain_mlp(net) is None  # buffers (BatchNorm)
    net = torch.nn.Sequential(torch.nn.Linear(9, 5), torch.nn.Dropout(), torch.nn.Linear(5, 4))
    assert stacked_mlp.plain_mlp(net) is None  # a layer it does not know
    net = torch.nn.Sequential(torch.nn.Linear(9, 5), torch.nn.Tanh(), torch.nn.ReLU(), torch.nn.Linear(5, 4))
    assert stacked_mlp.plain_mlp(net) is None  # two activations in a row


def _train_both(monkeypatch, model, x, y, masks, spec, seed=5):
    calls = []
    real = stacked_mlp.backward
    monkeypatch.setattr(stacked_mlp, "backward", lambda *a, **k: calls.append(1) or real(*a, **k))
    vec = train_references(model, fedleak.data.load("digits").spec, x, y, masks, spec, seed=seed)
    monkeypatch.setattr(stacked_mlp, "backward", real)
    seq = train_references(model, fedleak.data.load("digits").spec, x, y, masks, spec, seed=seed, vectorised=False)
    return vec, seq, len(calls)


@pytest.mark.parametrize(
    "model,spec,ragged",
    [
        ("mlp:16", TrainSpec(epochs=3, batch_size=16, lr=0.1, momentum=0.9), False),
        ("mlp:12,8,act=relu", TrainSpec(epochs=2, batch_size=8, lr=0.05, momentum=0.9, weight_decay=1e-3), True),
        ("mlp:10,act=sigmoid", TrainSpec(epochs=2, batch_size=8, lr=0.2, weight_decay=1e-2), True),
        ("mlp:16", TrainSpec(steps=9, batch_size=16, lr=1e-2, optimizer="adam"), True),
        ("mlp:10", TrainSpec(epochs=2, batch_size=8, lr=0.2), True),  # plain SGD: constant columns folded, gated
    ],
)
def test_hand_written_path_trains_the_sequential_models(monkeypatch, model, spec, ragged):
    """Same models as one after another; the digits pool has constant (empty) pixels, so the column split runs;
    a ragged plan (one model with more records: steps where the others have none) goes through the gated
    optimiser step. The written-out path must be the one that ran (a silent fallback would pass otherwise)."""
    data = fedleak.data.load("digits")
    x, y = data.tensors(range(60))
    assert int(stacked_mlp.constant_columns(x.flatten(1)).sum()) > 0
    masks = balanced_masks(4, 60, seed=1)
    if ragged:
        masks[0, :9] = True
    vec, seq, calls = _train_both(monkeypatch, model, x, y, masks, spec)
    assert calls > 0
    for n in vec.params:
        assert torch.allclose(vec.params[n], seq.params[n], atol=ATOL), n
        assert vec.params[n].is_contiguous()
    moved = max(
        float((seq.params[n] - fedleak.models.build(model, data.spec, seed=0).state_dict()[n]).abs().max())
        for n in seq.params
    )
    assert moved > 100 * ATOL  # the models trained: the tolerance is far below what training moved


def test_a_pool_without_constant_columns(monkeypatch):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (40,), generator=g)
    assert not stacked_mlp.constant_columns(x.flatten(1)).any()
    masks = balanced_masks(2, 40, seed=0)
    spec = TrainSpec(epochs=2, batch_size=8, lr=0.1, momentum=0.9)
    vec, seq, calls = _train_both(monkeypatch, "mlp:8", x, y, masks, spec)
    assert calls > 0
    for n in vec.params:
        assert torch.allclose(vec.params[n], seq.params[n], atol=ATOL), n
