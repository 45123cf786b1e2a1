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


def test_independent_drops_a_mixture_of_directions_already_kept():
    import torch

    from fedleak.attacks.inversion.spear import independent

    e = torch.eye(4, dtype=torch.float64)
    mix = (e[0] + e[1]) / 2**0.5  # in the span of the first two: adds no new record
    kept = independent(torch.stack([e[0], e[1], mix, e[2], e[3]]), 4)
    assert len(kept) == 4 and all(not torch.equal(k, mix) for k in kept)
    assert len(independent(torch.stack([e[0], mix, e[1]]), 3)) == 2  # e[1] is in span(e[0], mix): only 2 of 3


def test_spear_out_of_draws_says_beyond_reach_at_this_budget(digits):
    # one draw cannot find 6 records' directions: the record says so, with the count and the draws, and shows grey
    from fedleak.attacks.inversion import invert_batch

    model = fedleak.models.build("mlp:200,act=relu", digits.spec, seed=0)
    u = client_update(model, digits.subset(list(range(6))))
    rec = invert_batch([u], "spear", max_draws=1)[0]  # the budget reaches spear through the attack's options
    assert rec.extras["status"] == "beyond reach" and rec.extras["draws"] == 1
    found = rec.extras["found"]
    assert found < 6 and f"{found} of 6 directions found after 1 draws" in rec.extras["note"]
    assert bool((rec.pixels == 0.5).all())  # nothing guessed
    with pytest.raises(fedleak.errors.FedleakInputError):
        spear_leak(u, max_draws=0)


def test_fedleak_invert_says_what_spear_reported(tmp_path):
    # the CLI's experiment keeps the attack's own note: printed and in results.json (a grey image alone says nothing)
    from fedleak.audit.invert import run_inversion

    lines: list[str] = []
    r = run_inversion(
        dataset="digits",
        model="mlp:200,act=relu",
        attack="spear",
        batch_size=6,
        num_images=6,
        options={"max_draws": 1},
        echo=lines.append,
        out=tmp_path,
    )
    assert any("beyond reach at this budget" in n for n in r["notes"]), r["notes"]
    assert any(line.startswith("note: ") and "beyond reach" in line for line in lines)
    assert "beyond reach" in (tmp_path / "results.json").read_text()
