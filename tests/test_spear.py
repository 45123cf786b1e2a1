"""SPEAR: exact batch recovery from a ReLU first layer's weight gradient, and an honest refusal beyond reach."""

from __future__ import annotations

import pytest

import fedleak
from fedleak.attacks.inversion import applicable
from fedleak.attacks.inversion.spear import spear_leak
from fedleak.fl import client_update
from fedleak.metrics import match, psnr


@pytest.fixture(scope="module")
def digits():
    return fedleak.data.load("digits")


@pytest.mark.parametrize("b", [1, 3])
def test_spear_recovers_every_record_exactly(digits, b):
    idx = list(range(10, 10 + b))
    model = fedleak.models.build("mlp:200,act=relu", digits.spec, seed=0)
    rec = spear_leak(client_update(model, digits.subset(idx)), seed=0, max_draws=3000)  # small B: few draws
    truth = digits.pixels(idx)
    assert rec.extras["status"] == "exact" and rec.extras["found"] == b
    got = rec.pixels[match(rec.pixels, truth)]
    # exact up to float32 rounding: 60 dB is a per-pixel error near 1e-3, far below any optimisation attack
    assert bool((psnr(got, truth) > 60).all())
    labels = rec.labels[match(rec.pixels, truth)]
    assert labels.tolist() == digits.tensors(idx)[1].tolist()


def test_spear_reports_beyond_reach_instead_of_guessing(digits):
    # a first layer of 4 units cannot hold 6 records (rank <= 4 < B): no exact recovery, said so
    idx = list(range(6))
    model = fedleak.models.build("mlp:4,act=relu", digits.spec, seed=0)
    rec = spear_leak(client_update(model, digits.subset(idx)), seed=0)
    assert rec.extras["status"] != "exact"
    assert rec.extras["note"]


def test_applicable_names_why_spear_does_not_fit_a_conv_net(digits):
    u = client_update(fedleak.models.build("lenet", digits.spec, seed=0), digits.subset([0, 1]))
    reasons = applicable(u)
    assert isinstance(reasons["spear"], str) and reasons["spear"]
    v = client_update(fedleak.models.build("mlp:50,act=relu", digits.spec, seed=0), digits.subset([0, 1]))
    assert applicable(v)["spear"] is None
