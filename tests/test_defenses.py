"""Defenses: each transform does exactly what it says, DP-SGD clips per sample and accounts as Opacus does,
client-level DP clips each client, secure aggregation shows the plain sum."""

from __future__ import annotations

import json

import pytest
import torch

import fedleak
from fedleak.defenses import (
    ClientDPAggregator,
    DPSGDTrainer,
    plan,
    secure_groups,
    secure_sum,
)
from fedleak.defenses.accounting import calibrate_noise, epsilon
from fedleak.defenses.spec import expand_grid
from fedleak.defenses.update import (
    clip_payload,
    global_norm,
    keep_count,
    prune_payload,
    quantize_tensor,
)
from fedleak.errors import FedleakInputError
from fedleak.fl import ClientUpdate, FedConfig, Federation, TrainSpec, client_update


@pytest.fixture(scope="module")
def digits():
    return fedleak.data.load("digits")


def _update(payload, client=0, kind="delta"):
    return ClientUpdate("mlp", {}, payload, kind, 10, 1, 0.1, 10, torch.arange(3), client=client)


def _payload(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "a": torch.randn(7, 13, generator=g),
        "b": torch.randn(29, generator=g),
        "c": torch.randn(3, generator=g),
    }


@pytest.mark.parametrize("fraction", [0.0, 0.5, 0.9, 0.99])
@pytest.mark.parametrize("scope", ["layer", "global"])
def test_prune_keeps_exactly_the_largest(fraction, scope):
    p = _payload(1)
    out = prune_payload(p, fraction, scope)
    if scope == "layer":
        for k, v in p.items():
            kept = out[k] != 0
            assert int(kept.sum()) == keep_count(v.numel(), fraction)
            assert torch.equal(out[k][kept], v[kept])  # survivors unchanged
            if kept.any() and (~kept).any():
                assert v[kept].abs().min() >= v[~kept].abs().max()  # the largest ones survive
    else:
        flat_in = torch.cat([v.reshape(-1) for v in p.values()])
        flat_out = torch.cat([out[k].reshape(-1) for k in p])
        kept = flat_out != 0
        assert int(kept.sum()) == keep_count(flat_in.numel(), fraction)
        if kept.any() and (~kept).any():
            assert flat_in[kept].abs().min() >= flat_in[~kept].abs().max()


@pytest.mark.parametrize("clip", [0.01, 1.0, 100.0])
def test_clipped_update_norm_at_most_c(clip):
    p = _payload(2)
    out = clip_payload(p, clip)
    assert float(global_norm(out)) <= clip * (1 + 1e-5)
    if float(global_norm(p)) <= clip:
        assert all(torch.equal(out[k], p[k]) for k in p)  # below C: untouched
    else:  # direction kept
        ratio = out["a"] / p["a"]
        assert torch.allclose(ratio, ratio.flatten()[0].expand_as(ratio))


def test_quantize_levels_and_error():
    t = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    for bits in (2, 4, 8):
        q = quantize_tensor(t, bits)
        assert len(torch.unique(q)) <= 2**bits - 1
        step = t.abs().max() / (2 ** (bits - 1) - 1)
        assert float((q - t).abs().max()) <= float(step) / 2 + 1e-6
    assert set(torch.sign(quantize_tensor(t, 1)).unique().tolist()) <= {-1.0, 1.0}


def test_plan_parses_every_defense_and_refuses_bad_specs():
    p = plan(["prune:0.9", "quantize:4", "noise:0.1", "clip:2", "secagg:3", "client-dp:noise=1,clip=0.5"])
    assert [type(t).__name__ for t in p.transforms] == ["Prune", "Quantize", "Noise", "Clip"]
    assert p.secagg == 3 and isinstance(p.aggregator, ClientDPAggregator) and p.aggregator.clip == 0.5
    q = plan(["dp-sgd:epsilon=8,delta=1e-5,accountant=prv"])
    assert q.trainer.target_epsilon == 8 and q.trainer.accountant == "prv" and q.trainer.noise is None
    for bad in [
        "prune:1.5",
        "prune:0.5,0.9",
        "dp-sgd:noise=1,epsilon=3",
        "dp-sgd:clip=1",
        "dp-sgd:nosie=1",
        "quantize:0",
        "secagg:0",
        "nosuch:1",
        "dp-sgd:noise=x",
        "dp-sgd:noise=1,accountant=foo",
    ]:
        with pytest.raises(FedleakInputError):
            plan([bad])
    assert plan(["none"]).label == "none" and plan(None).privacy()["epsilon"] is None


def test_expand_grid():
    assert expand_grid("prune:0.5,0.9,0.99") == ["prune:0.5", "prune:0.9", "prune:0.99"]
    assert expand_grid("dp-sgd:epsilon=1,4,8,delta=1e-5") == [
        "dp-sgd:epsilon=1,delta=1e-5",
        "dp-sgd:epsilon=4,delta=1e-5",
        "dp-sgd:epsilon=8,delta=1e-5",
    ]
    assert expand_grid("client-dp:noise=0.5,1,clip=1,2") == [
        "client-dp:noise=0.5,clip=1",
        "client-dp:noise=0.5,clip=2",
        "client-dp:noise=1,clip=1",
        "client-dp:noise=1,clip=2",
    ]
    assert expand_grid("none") == ["none"]
    for spec in expand_grid("prune:0.5,0.9") + expand_grid("dp-sgd:epsilon=1,8"):
        plan([spec])  # every grid point is a valid spec


def test_secure_aggregation_view_is_the_plain_sum():
    ups = [_update(_payload(s), client=s) for s in range(5)]
    s = secure_sum(ups)
    for k in ups[0].payload:
        assert torch.allclose(s.payload[k], sum(u.payload[k] for u in ups), atol=1e-6)
    assert s.client is None and s.num_clients == 5 and s.num_samples == 50 and len(s.labels) == 15
    groups = secure_groups(ups, 2)  # 5 clients, K=2: groups of 2 and 3, the server never sees fewer than K
    assert [g.num_clients for g in groups] == [2, 3]
    total = sum(g.payload["b"] for g in groups)
    assert torch.allclose(total, sum(u.payload["b"] for u in ups), atol=1e-6)
    with pytest.raises(FedleakInputError):
        secure_groups(ups[:1], 2)


def test_client_dp_clips_each_client_and_accounts_sampling_rate():
    ups = [_update({k: 100 * v for k, v in _payload(s).items()}, client=s) for s in range(4)]
    agg = ClientDPAggregator(noise=0.0, clip=1.0, population=20)
    out = agg(ups, torch.Generator().manual_seed(0))
    assert float(global_norm(out)) <= 1.0 + 1e-5  # mean of clipped updates
    expected = {k: sum(clip_payload(u.payload, 1.0)[k] for u in ups) / 4 for k in ups[0].payload}
    assert all(torch.allclose(out[k], expected[k], atol=1e-6) for k in out)
    noisy = ClientDPAggregator(noise=1.0, clip=1.0, population=20)
    for _ in range(10):
        noisy(ups, torch.Generator().manual_seed(1))
    pr = noisy.privacy()
    assert pr["sample_rate"] == pytest.approx(0.2) and pr["rounds"] == 10
    assert pr["epsilon"] == pytest.approx(epsilon([(1.0, 0.2, 10)], 1e-5, "rdp"))


def _per_sample_clipped_mean(model, x, y, clip):
    """The slow, obvious DP-SGD gradient (no noise): one backward per sample."""
    params = [p for p in model.parameters() if p.requires_grad]
    total = [torch.zeros_like(p) for p in params]
    for i in range(len(x)):
        g = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1]), params)
        n = torch.sqrt(sum((t**2).sum() for t in g))
        f = min(1.0, clip / (float(n) + 1e-6))
        total = [a + f * b for a, b in zip(total, g, strict=True)]
    return [t / len(x) for t in total]


def test_dp_sgd_gradient_is_the_mean_of_per_sample_clipped_gradients(digits):
    model = fedleak.models.build("lenet", digits.spec, seed=0)
    x, y = digits.subset(range(6)).tensors()
    dp = DPSGDTrainer(noise=0.0, clip=0.5)
    got = dp.gradient(model, x, y, torch.Generator().manual_seed(0))
    want = _per_sample_clipped_mean(model, x, y, 0.5)
    for g, w in zip(got.values(), want, strict=True):
        assert torch.allclose(g, w, atol=1e-5)
    assert float(global_norm(got)) <= 0.5 + 1e-5
    assert not any(hasattr(p, "grad_sample") for p in model.parameters())  # Opacus hooks cleaned up
    # with noise the batch gradient moves by about z*C/B per entry; same generator seed, same numbers
    noisy = DPSGDTrainer(noise=1.0, clip=0.5)
    a = noisy.gradient(model, x, y, torch.Generator().manual_seed(3))
    b = noisy.gradient(model, x, y, torch.Generator().manual_seed(3))
    assert all(torch.equal(a[k], b[k]) for k in a)
    std = torch.cat([(a[k] - got[k]).flatten() for k in a]).std()
    assert float(std) == pytest.approx(1.0 * 0.5 / 6, rel=0.1)


def test_dp_sgd_epsilon_matches_opacus_privacy_engine(digits):
    """Our ledger and Opacus's own PrivacyEngine, on the same training, report the same epsilon."""
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    x, y = digits.subset(range(200)).tensors()
    spec = TrainSpec(epochs=2, batch_size=25, lr=0.1)
    ours = DPSGDTrainer(noise=1.3, clip=1.0, delta=1e-5)
    model = fedleak.models.build("mlp", digits.spec, seed=0)
    steps = ours.train(model, x, y, spec, torch.Generator().manual_seed(0))
    assert steps == 16 and ours.privacy()["sample_rate"] == pytest.approx(1 / 8)

    ref = fedleak.models.build("mlp", digits.spec, seed=0)
    engine = PrivacyEngine(accountant="rdp")
    m, opt, loader = engine.make_private(
        module=ref,
        optimizer=torch.optim.SGD(ref.parameters(), lr=0.1),
        data_loader=DataLoader(TensorDataset(x, y), batch_size=25),
        noise_multiplier=1.3,
        max_grad_norm=1.0,
    )
    for _ in range(2):
        for xb, yb in loader:
            opt.zero_grad()
            if len(xb):
                torch.nn.functional.cross_entropy(m(xb), yb).backward()
            opt.step()
    assert ours.privacy()["epsilon"] == pytest.approx(engine.get_epsilon(1e-5), rel=1e-9)
    assert ours.privacy()["epsilon_by_accountant"]["prv"] < ours.privacy()["epsilon"]  # PRV is tighter


def test_dp_sgd_target_epsilon_is_met_for_the_whole_federation(digits):
    train, test = digits.subset(range(600)).split(0.25, seed=0)
    p = plan(["dp-sgd:epsilon=4,delta=1e-5"]).bind(rounds=2, clients=3)
    model = p.prepare(fedleak.models.build("mlp", digits.spec, seed=0))
    fed = Federation(
        model,
        train,
        test,
        FedConfig(clients=3, rounds=2, batch_size=50, seed=0),
        transforms=p.transforms,
        trainer=p.trainer,
        aggregator=p.aggregator,
    )
    accs = [r.test_accuracy for r in fed.run(keep_updates=False)]
    pr = p.privacy()
    assert 3.5 < pr["epsilon"] <= 4.0  # calibrated for 2 rounds x 1 epoch at q = 1/ceil(N/B)
    assert pr["protected_units"] == 3 and pr["steps"] == 2 * round(1 / pr["sample_rate"])
    # the calibrated noise agrees with Opacus's get_noise_multiplier for the same length and rate
    assert pr["noise_multiplier"] == pytest.approx(calibrate_noise(4.0, 1e-5, pr["sample_rate"], pr["steps"]))
    assert accs[-1] > 0.15  # still learns: 10 classes, chance is 0.1 (0.21 measured on 150 test records)


def test_prepare_swaps_batchnorm_for_groupnorm(digits):
    p = plan(["dp-sgd:noise=1,clip=1"])
    model = p.prepare(fedleak.models.build("convnet:8", digits.spec, seed=0))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert model.fedleak_spec == "convnet:8,norm=gn" and any("GroupNorm" in n for n in p.privacy()["notes"])
    bn = fedleak.models.build("convnet:8", digits.spec, seed=0)
    with pytest.raises(FedleakInputError):
        DPSGDTrainer(noise=1.0).gradient(bn, *digits.subset([0, 1]).tensors(), torch.Generator())


def test_pruning_defends_a_fedsgd_update(digits):
    """The defended update is what the server receives; the honest one is untouched by plan([])."""
    model = fedleak.models.build("lenet", digits.spec, seed=0)
    honest = client_update(model, digits.subset([3, 17]), transforms=plan([]).transforms)
    pruned = client_update(model, digits.subset([3, 17]), transforms=plan(["prune:0.99"]).transforms)
    for k in honest.payload:
        assert int((pruned.payload[k] != 0).sum()) == keep_count(honest.payload[k].numel(), 0.99)


def test_train_cli_defense_reports_privacy_and_refuses_bad_specs(tmp_path, capsys):
    from conftest import run_cli

    code, _, err = run_cli(["train", "--dataset", "digits", "--defense", "prune:2", "--out", tmp_path / "bad"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()
    args = [
        "train",
        "--dataset",
        "digits",
        "--samples",
        "300",
        "--clients",
        "2",
        "--rounds",
        "2",
        "--batch-size",
        "50",
    ]
    code, _, _ = run_cli([*args, "--defense", "dp-sgd:noise=1.0,clip=1.0", "--out", tmp_path / "dp"], capsys)
    assert code == 0
    priv = json.loads((tmp_path / "dp" / "metrics.json").read_text())["privacy"]
    # 2 rounds x ceil(120/50) = 3 steps per round at q = 1/3, for the worst client
    assert priv["steps"] == 6 and priv["sample_rate"] == pytest.approx(1 / 3)
    assert priv["epsilon"] == pytest.approx(epsilon([(1.0, 1 / 3, 6)], 1e-5))
