"""A FedAvg client's labels and step pairing, found by simulating its local training on the attacker's own
inputs: the simulated search names the labels in the client's step order, where reading counts off the last
layer cannot see the pairing at all."""

from __future__ import annotations

import pytest
import torch

import fedleak
from fedleak.attacks.inversion import fedavg_labels
from fedleak.attacks.inversion.fedavg_labels import rank_label_rows, rank_schedules
from fedleak.attacks.inversion.replay import (
    attack_module,
    epoch_groupings,
    fedavg_delta,
    label_arrangements,
    local_batches,
    schedule_batches,
)
from fedleak.fl import client_update
from fedleak.fl.local import TrainSpec, minibatches


@pytest.fixture(scope="module")
def digits():
    return fedleak.data.load("digits")


def _key(row: list[int], n: int, b: int) -> tuple:
    return tuple(tuple(sorted(row[sl])) for sl in local_batches(n, b, -(-n // b)))


def _case(digits, idx: list[int], seed: int, lr: float = 0.5):  # noqa: ANN001, ANN202
    """A FedAvg update of ``idx`` (one epoch in batches of 2) and the labels in the client's step order."""
    model = fedleak.models.build("lenet", digits.spec, seed=0)
    u = client_update(model, digits.subset(idx), local_epochs=1, batch_size=2, lr=lr, seed=seed)
    order = list(minibatches(len(idx), TrainSpec(epochs=1, batch_size=2), torch.Generator().manual_seed(seed)))
    _, y = digits.tensors(idx)
    truth = torch.cat([y[o] for o in order]).tolist()
    m = attack_module(model, True)
    theta = {n: u.global_state[n] for n in u.payload}
    return u, m, theta, truth


def test_arrangements_are_the_distinct_step_multisets():
    rows = label_arrangements(torch.tensor([0, 1, 2, 3, 4, 5]), 2, 3, 1000)
    assert len(rows) == 90  # 6! / (2! 2! 2!): which pair goes in which of the 3 steps
    assert len({_key(r, 6, 2) for r in rows.tolist()}) == 90
    assert sorted(rows[0].tolist()) == [0, 1, 2, 3, 4, 5]


def test_arrangements_are_every_distinct_one_whatever_the_repeats():
    # against every permutation: rows with repeated labels have few distinct arrangements, which sampling orders
    # at random would miss (and look for long: 16 equal labels have exactly one)
    import itertools
    import random

    rng = random.Random(0)
    for _ in range(60):
        n = rng.randint(2, 7)
        b, steps = rng.randint(1, n), rng.randint(1, 4)
        row = [rng.randint(0, 2) for _ in range(n)]
        epoch = local_batches(n, b, min(steps, -(-n // b)))
        keys = {tuple(tuple(sorted([row[i] for i in o][sl])) for sl in epoch) for o in itertools.permutations(range(n))}
        got = label_arrangements(torch.tensor(row), b, steps, 10_000).tolist()
        assert got[0] == row and all(sorted(r) == sorted(row) for r in got)
        assert sorted(tuple(tuple(sorted(r[sl])) for sl in epoch) for r in got) == sorted(keys)
        assert len(label_arrangements(torch.tensor(row), b, steps, 2)) == min(2, len(keys))
    assert label_arrangements(torch.zeros(16, dtype=torch.long), 8, 6, 5_000).tolist() == [[0] * 16]
    # beyond 8 records, where fewer are asked than exist, random orders may miss the rare ones (6 and 6 in two
    # batches of 6: all of one class in the first batch is 1 order in 924); the count is still met, every row distinct
    for seed in range(5):
        rows = label_arrangements(torch.tensor([0, 1] * 6), 6, 2, 6, seed=seed).tolist()
        assert len({tuple(sorted(r[:6])) for r in rows}) == 6


@pytest.mark.parametrize("start", [0, 4, 8])
def test_simulated_search_names_the_clients_labels_in_step_order(digits, start):
    idx = list(range(start, start + 4))
    u, m, theta, truth = _case(digits, idx, seed=start + 1)
    rows, err = rank_label_rows(m, theta, {}, u, torch.tensor(sorted(truth)), 4)
    assert _key(rows[0].tolist(), 4, 2) == _key(truth, 4, 2)
    assert err[0] < err[1]  # ranked best first


def test_local_search_finds_it_too_when_the_candidates_are_too_many(digits, monkeypatch):
    monkeypatch.setattr(fedavg_labels, "EXHAUSTIVE_LIMIT", 10)  # every search goes local
    idx = [0, 1, 2, 3]
    u, m, theta, truth = _case(digits, idx, seed=1)
    wrong = torch.tensor([truth[0], truth[0], truth[2], truth[3]])  # one count off, the pairing unknown
    rows, _ = rank_label_rows(m, theta, {}, u, wrong, 2)
    assert _key(rows[0].tolist(), 4, 2) == _key(truth, 4, 2)


def test_granted_labels_keep_their_multiset(digits):
    idx = [4, 5, 6, 7]
    u, m, theta, truth = _case(digits, idx, seed=5)
    rows, _ = rank_label_rows(m, theta, {}, u, torch.tensor(sorted(truth)), 3, granted=True)
    assert all(sorted(r) == sorted(truth) for r in rows.tolist())
    assert _key(rows[0].tolist(), 4, 2) == _key(truth, 4, 2)


def test_a_fedavg_delta_is_matched_on_the_scale_of_the_gradient_it_stands_for(digits):
    # one local step over the whole batch: w1 - w0 = -lr x the FedSGD gradient; read as a gradient, they agree
    # (the l2 attack then meets both on one scale; its L-BFGS tolerances are absolute)
    from fedleak.attacks.inversion.optimize import as_gradient, squared_norm

    model = fedleak.models.build("lenet", digits.spec, seed=0)
    idx = [0, 1, 2, 3]
    delta = client_update(model, digits.subset(idx), local_steps=1, batch_size=4, lr=0.01, seed=0)
    grad = client_update(model, digits.subset(idx))
    assert grad.kind == "gradient" and as_gradient(grad) == 1.0 and as_gradient(delta) == -100.0
    for n in grad.payload:  # float32's w1 - w0 keeps about 4 digits of a 0.01 step (measured: <= 1.3e-4 relative)
        read = delta.payload[n] * as_gradient(delta)
        assert float((read - grad.payload[n]).norm() / grad.payload[n].norm()) < 1e-3, n
    assert squared_norm(delta) == pytest.approx(squared_norm(grad), rel=1e-4)


def _epochs_case(digits, idx: list[int], seed: int, epochs: int = 3):  # noqa: ANN001, ANN202
    """A FedAvg update of 4 records over ``epochs`` epochs in batches of 2 (lr 0.5), the labels in the client's
    first-epoch order and the client's schedule in the attacker's terms (dummy i = the record the client put at
    position i of its first epoch)."""
    model = fedleak.models.build("lenet", digits.spec, seed=0)
    u = client_update(model, digits.subset(idx), local_epochs=epochs, batch_size=2, lr=0.5, seed=seed)
    order = list(minibatches(4, TrainSpec(epochs=epochs, batch_size=2), torch.Generator().manual_seed(seed)))
    first = torch.cat(order[:2])
    dummy = {int(r): i for i, r in enumerate(first)}
    schedule = [[dummy[int(r)] for r in torch.cat(order[2 * e : 2 * e + 2])] for e in range(epochs)]
    x, y = digits.tensors(idx)
    return u, model, x[first], y[first], torch.tensor(schedule)


def _grouping(schedule: list[list[int]]) -> tuple:
    return tuple(tuple(tuple(sorted(order[i : i + 2])) for i in (0, 2)) for order in schedule[1:])


def test_a_schedule_replays_the_clients_epochs_exactly(digits):
    # every epoch reshuffles; with the client's schedule written in the attacker's terms (the first epoch in
    # dummy order, the later ones as record orders) the replay is the client's training to float precision
    u, model, x, y, schedule = _epochs_case(digits, [0, 1, 2, 3], seed=1)
    m = attack_module(model, True)
    params = {n: u.global_state[n] for n in u.payload}
    kw = {"local_steps": 6, "local_lr": 0.5, "batch_size": 2}
    d = fedavg_delta(m, params, {}, x, y, order=schedule_batches(schedule, 4, 2, 6), **kw)
    for n in u.payload:
        assert torch.allclose(d[n], u.payload[n], atol=1e-5, rtol=1e-4), n
    assert _grouping(schedule.tolist()) != _grouping([[0, 1, 2, 3]] * 3)  # this client did reshuffle
    d0 = fedavg_delta(m, params, {}, x, y, **kw)  # every epoch in the first's grouping: another training run
    assert max(float((d0[n] - u.payload[n]).abs().max()) for n in u.payload) > 1e-3


@pytest.mark.parametrize("start", [0, 8])
def test_the_simulation_names_each_later_epochs_grouping(digits, start):
    # the client's labels given, the 6 x 6 groupings of epochs 2 and 3 simulated: the client's ranks first, with
    # a margin (measured on three digits updates: 4e-4 to 1.4e-3 against 2e-2 to 3e-2 for the next)
    idx = list(range(start, start + 4))
    u, model, _, y, schedule = _epochs_case(digits, idx, seed=start + 1)
    m = attack_module(model, True)
    theta = {n: u.global_state[n] for n in u.payload}
    labels, schedules, err = rank_schedules(m, theta, {}, u, y.view(1, -1), 3)
    assert schedules.shape == (3, 3, 4) and torch.equal(labels[0], y)
    assert _grouping(schedules[0].tolist()) == _grouping(schedule.tolist())
    assert 5 * err[0] < err[1]


def test_the_local_search_of_swaps_names_the_grouping_too(digits, monkeypatch):
    # beyond EXHAUSTIVE_LIMIT candidates the groupings are searched by swaps within a later epoch, from the first
    # epoch's grouping: on the first digits case it reaches the client's, as the exhaustive search does
    monkeypatch.setattr(fedavg_labels, "EXHAUSTIVE_LIMIT", 10)
    u, model, _, y, schedule = _epochs_case(digits, [0, 1, 2, 3], seed=1)
    theta = {n: u.global_state[n] for n in u.payload}
    labels, schedules, err = rank_schedules(attack_module(model, True), theta, {}, u, y.view(1, -1), 2)
    assert _grouping(schedules[0].tolist()) == _grouping(schedule.tolist()) != _grouping([[0, 1, 2, 3]] * 3)
    assert torch.equal(labels[0], y) and err[0] < err[1]


def test_groupings_are_every_distinct_batching_of_an_epoch():
    import itertools

    for n, b in [(4, 2), (5, 2), (6, 3), (7, 3)]:
        epoch = local_batches(n, b, -(-n // b))
        every = {tuple(tuple(sorted(o[sl])) for sl in epoch) for o in itertools.permutations(range(n))}
        got = epoch_groupings(n, b, 10_000).tolist()
        assert got[0] == list(range(n)) and len(got) == len(every)
        assert {tuple(tuple(o[sl]) for sl in epoch) for o in got} == every  # each batch sorted, none twice
    assert epoch_groupings(6, 2, 89) is None and len(epoch_groupings(6, 2, 90)) == 90


def test_a_reshuffle_the_simulation_cannot_tell_apart_is_reported(digits, monkeypatch):
    # where the later epochs' groupings simulate alike (CIFAR-10 on DLG's LeNet at lr 0.01-0.1: all 36 agree to two
    # digits), the run says so in its note rather than replaying one of them as if it were the client's
    from fedleak.attacks.inversion import invert, optimize

    u = _epochs_case(digits, [0, 1, 2, 3], seed=1, epochs=2)[0]
    rec = invert(u, "fedavg", iterations=1)
    assert rec.extras["note"] is None and len(rec.extras["schedule"]) == 2  # told apart here (digits, lr 0.5)
    real = optimize.rank_schedules

    def alike(*args, **kw):  # noqa: ANN002, ANN003, ANN202
        labels, schedules, err = real(*args, **kw)
        return labels, schedules, torch.full_like(err, float(err[0]))

    monkeypatch.setattr(optimize, "rank_schedules", alike)
    rec = invert(u, "fedavg", iterations=1)
    assert "not identified" in rec.extras["note"] and "2 epochs" in rec.extras["note"]
    # beyond SCHEDULE_RECORDS records the groupings are not searched at all, and the note says that instead
    model = fedleak.models.build("lenet", digits.spec, seed=0)
    big = client_update(model, digits.subset(list(range(10))), local_epochs=2, batch_size=5, lr=0.5, seed=0)
    rec = invert(big, "fedavg", iterations=1)
    assert "not searched" in rec.extras["note"] and rec.extras["schedule"] is None


def test_two_classes_say_the_simulated_labels_may_be_wrong(digits):
    # with 2 classes the bias change is one number: label rows of other counts match it as well (on lfw-faces the
    # client's count ranked first in 2 of 6 updates), so the run says its labels are a guess; 10 classes do not
    from fedleak.attacks.inversion import invert

    faces = fedleak.data.load("lfw-faces")
    model = fedleak.models.build("lenet:input=normalised", faces.spec, seed=0)
    idx = [0, 1, 2, 3, 100, 101, 102, 103]
    assert faces.labels[idx].unique().numel() == 2
    u = client_update(model, faces.subset(idx), local_epochs=1, batch_size=4, lr=0.1, seed=0)
    rec = invert(u, "fedavg", iterations=1)
    assert rec.label_method == "simulated" and "2 classes" in rec.extras["note"]
    # beside another note (10 records in 2 epochs: the reshuffle is not searched), both are kept
    idx = [0, 1, 2, 3, 4, 100, 101, 102, 103, 104]
    u = client_update(model, faces.subset(idx), local_epochs=2, batch_size=5, lr=0.1, seed=0)
    note = invert(u, "fedavg", iterations=1).extras["note"]
    assert "2 classes" in note and "not searched" in note
    u = _case(digits, [0, 1, 2, 3], seed=1)[0]
    assert "2 classes" not in (invert(u, "fedavg", iterations=1).extras["note"] or "")
