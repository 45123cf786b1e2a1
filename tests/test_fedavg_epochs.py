"""FedAvg over local epochs of mini-batches: the attacker's replay is the client's training (same batches,
same SGD steps) to float precision when the order is known, and the CLI carries E and b to the update."""

from __future__ import annotations

import pytest
import torch

import fedleak
from fedleak.attacks.inversion.replay import attack_module, fedavg_delta, local_batches
from fedleak.errors import FedleakInputError
from fedleak.fl import client_update
from fedleak.fl.local import TrainSpec, minibatches


@pytest.fixture(scope="module")
def digits():
    return fedleak.data.load("digits")


def test_replay_with_the_clients_order_equals_its_delta(digits):
    # 2 epochs of 5 records in batches of 2 -> 3 steps per epoch, shuffled by the client's seeded generator
    idx = [0, 1, 2, 3, 4]
    model = fedleak.models.build("lenet", digits.spec, seed=0)
    u = client_update(model, digits.subset(idx), local_epochs=2, batch_size=2, lr=0.05, seed=7)
    assert (u.local_steps, u.batch_size, u.num_samples) == (6, 2, 5)
    order = list(minibatches(5, TrainSpec(epochs=2, batch_size=2), torch.Generator().manual_seed(7)))
    m = attack_module(model, True)
    params = {n: u.global_state[n] for n in u.payload}
    x, y = digits.tensors(idx)
    d = fedavg_delta(m, params, {}, x, y, local_steps=6, local_lr=0.05, batch_size=2, order=order)
    for n in u.payload:  # float32 SGD, same operations: equal up to rounding
        assert torch.allclose(d[n], u.payload[n], atol=1e-6, rtol=1e-5), n
    # and the order matters: the server's default (consecutive slices) is a different training run
    d0 = fedavg_delta(m, params, {}, x, y, local_steps=6, local_lr=0.05, batch_size=2)
    assert max(float((d0[n] - u.payload[n]).abs().max()) for n in u.payload) > 1e-5


def test_default_order_shares_one_dummy_per_record_across_epochs():
    steps = local_batches(5, 2, 6)  # E=2 epochs of ceil(5/2)=3 batches
    assert steps[:3] == steps[3:]
    covered = sorted(i for sl in steps[:3] for i in range(5)[sl])
    assert covered == [0, 1, 2, 3, 4]  # every record once per epoch


def test_run_inversion_passes_epochs_and_refuses_both_or_oversized(digits):
    from fedleak.audit.invert import run_inversion

    with pytest.raises(FedleakInputError, match="both set"):
        run_inversion(
            dataset="digits", model="lenet", attack="fedavg", num_images=4, batch_size=4, local_steps=2,
            local_epochs=1, echo=lambda s: None,
        )  # fmt: skip
    with pytest.raises(FedleakInputError, match="exceeds"):
        run_inversion(
            dataset="digits", model="lenet", attack="fedavg", num_images=4, batch_size=4, local_epochs=1,
            local_batch_size=8, echo=lambda s: None,
        )  # fmt: skip
