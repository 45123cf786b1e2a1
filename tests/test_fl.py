import copy

import pytest
import torch
import torch.nn.functional as F

from fedleak.data import load
from fedleak.errors import FedleakInputError
from fedleak.fl import ClientUpdate, FedConfig, Federation, ThreatModel, client_update, weighted_mean
from fedleak.models import build


def test_fedsgd_update_is_the_batch_gradient_and_hides_labels_by_default():
    ds = load("digits")
    model = build("mlp", ds.spec, seed=0)
    u = client_update(model, ds.subset([3, 17]))
    x, y = ds.tensors([3, 17])
    m = copy.deepcopy(model)
    F.cross_entropy(m(x), y).backward()
    for name, p in m.named_parameters():
        assert torch.allclose(u.payload[name], p.grad, atol=1e-7)
    assert u.kind == "gradient" and u.num_samples == 2 and u.labels is None
    assert all(torch.equal(u.global_state[k], v) for k, v in model.state_dict().items())
    assert (
        ThreatModel(labels=True)
        .view(client_update(model, ds.subset([3, 17]), threat=ThreatModel(labels=True)))
        .labels.tolist()
        == y.tolist()
    )


def test_fedavg_one_step_delta_is_minus_lr_times_gradient():
    ds = load("digits")
    model = build("mlp", ds.spec, seed=0)
    g = client_update(model, ds.subset(range(8)))
    d = client_update(model, ds.subset(range(8)), local_steps=1, batch_size=8, lr=0.05)
    assert d.kind == "delta" and d.local_steps == 1 and d.local_lr == 0.05 and d.batch_size == 8
    for k in g.payload:
        assert torch.allclose(d.payload[k], -0.05 * g.payload[k], atol=1e-6)


def test_fedavg_runs_the_asked_number_of_steps_and_model_is_untouched():
    ds = load("digits")
    model = build("mlp", ds.spec, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    u = client_update(model, ds.subset(range(40)), local_epochs=2, batch_size=8)
    assert u.local_steps == 10  # 2 epochs x 5 batches
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_missing_grant_is_a_clear_error():
    ds = load("digits")
    u = client_update(build("mlp", ds.spec), ds.subset(range(8)), local_steps=2, threat=ThreatModel(local_lr=False))
    assert u.local_lr is None
    with pytest.raises(FedleakInputError, match="needs local_lr"):
        u.require("local_steps", "local_lr", attack="fedavg")


def test_weighted_mean_weights_by_sample_count():
    def upd(v, n):
        return ClientUpdate("m", {}, {"w": torch.tensor([v])}, "delta", n, 1, 0.1, 1, None)

    agg = weighted_mean([upd(1.0, 1), upd(4.0, 3)])
    assert torch.allclose(agg["w"], torch.tensor([3.25]))


@pytest.mark.parametrize("partition,bound", [("iid", 0.90), ("dirichlet:0.3", 0.80)])
def test_fedavg_on_digits_learns(partition, bound):
    ds = load("digits")
    train, test = ds.split(0.2, seed=0)
    fed = Federation(build("mlp", ds.spec, seed=0), train, test, FedConfig(clients=10, rounds=20, partition=partition))
    results = list(fed.run(keep_updates=False))
    assert results[-1].test_accuracy >= bound
    assert results[-1].test_accuracy > results[0].test_accuracy


def test_same_seed_same_numbers_and_every_round_yields_updates():
    ds = load("digits")
    train, test = ds.split(0.2, seed=0)

    def run(seed):
        fed = Federation(
            build("mlp", ds.spec, seed=seed),
            train,
            test,
            FedConfig(clients=6, rounds=3, fraction=0.5, seed=seed),
        )
        return list(fed.run())

    a, b = run(1), run(1)
    assert [r.test_accuracy for r in a] == [r.test_accuracy for r in b]
    assert [r.sampled for r in a] == [r.sampled for r in b]
    assert all(len(r.updates) == 3 and {u.client for u in r.updates} == set(r.sampled) for r in a)
    assert all(u.round == r.round for r in a for u in r.updates)


def test_fedsgd_federation_learns():
    ds = load("digits")
    train, test = ds.split(0.2, seed=0)
    fed = Federation(
        build("mlp", ds.spec, seed=0),
        train,
        test,
        FedConfig(clients=5, rounds=30, mode="fedsgd", server_lr=1.0, batch_size=64),
    )
    assert list(fed.run(keep_updates=False))[-1].test_accuracy > 0.6
