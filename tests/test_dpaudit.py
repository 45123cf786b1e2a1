"""DP auditing with canaries (#18): the bound is valid, the estimate tracks the Gaussian mechanism, the honest
DP implementations pass, and deliberately broken ones are caught.

The broken variants live here, in the tests, on purpose: they are what an audit must catch.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedleak.audit.dpaudit import DPAuditOptions, run_dp_audit
from fedleak.cli import main
from fedleak.defenses import DPSGDTrainer, plan
from fedleak.defenses.accounting import calibrate_noise, epsilon
from fedleak.defenses.canaries import GradientCanaries, draw_inclusion
from fedleak.defenses.dpsgd import fingerprint
from fedleak.errors import FedleakInputError, NonFiniteError
from fedleak.metrics.dp_audit import canary_lower_bound, gaussian_epsilon, one_shot_estimate


def _per_sample(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample gradients (torch.func: vmap over the batch of the gradient of one record's loss)."""
    from torch.func import functional_call, grad, vmap

    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}

    def loss(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, p, (xi.unsqueeze(0),))
        return torch.nn.functional.cross_entropy(out, yi.unsqueeze(0))

    return vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y)


class NoiseOncePerRound(DPSGDTrainer):
    """BROKEN on purpose: a round of ``local`` DP-SGD steps (at a frozen point) accounted as ``local`` noisy
    steps, but the noise is drawn once for the round instead of once per step."""

    local: int = 16

    def gradient(self, model, x, y, generator):  # type: ignore[override]
        z = self.noise_for(1.0, self.local)
        per = _per_sample(model, x, y)
        unit = fingerprint(x, y)
        b = per[next(iter(per))].shape[0]
        sq = sum(g.reshape(b, -1).pow(2).sum(1) for g in per.values())
        f = (self.clip / (sq.sqrt() + 1e-6)).clamp(max=1.0)
        extra = self.canaries.clipped_sum(per, self.clip) if self.canaries and self.canaries.hosts(unit) else None
        out = {}
        for n, g in per.items():
            s = torch.einsum("b,b...->...", f, g) + (extra[n].to(g.dtype) if extra else 0)
            out[n] = (self.local * s + z * self.clip * torch.randn(s.shape, generator=generator)) / self.local / b
        self.ledger.add(unit, z, 1.0, self.local)
        return out


class ClipAfterNoise(DPSGDTrainer):
    """BROKEN on purpose: noise is added to the unclipped per-sample sum and the noisy sum is clipped
    afterwards (to b * clip), so one record's influence is not bounded by the clip norm."""

    def gradient(self, model, x, y, generator):  # type: ignore[override]
        z = self.noise_for(1.0, 1)
        per = _per_sample(model, x, y)
        unit = fingerprint(x, y)
        b = per[next(iter(per))].shape[0]
        extra = self.canaries.raw_sum(per) if self.canaries and self.canaries.hosts(unit) else None
        noisy = {
            n: g.sum(0)
            + (extra[n].to(g.dtype) if extra else 0)
            + z * self.clip * torch.randn(g.shape[1:], generator=generator)
            for n, g in per.items()
        }
        norm = math.sqrt(sum(float(v.pow(2).sum()) for v in noisy.values()))
        scale = min(1.0, b * self.clip / norm)
        self.ledger.add(unit, z, 1.0, 1)
        return {n: v * scale / b for n, v in noisy.items()}


# --- pure maths -------------------------------------------------------------------------------------------


def test_gaussian_epsilon_sits_just_under_the_rdp_accountant_for_the_gaussian_mechanism():
    # T Gaussian steps at rate 1 with noise z are exactly sqrt(T)/z-GDP; RDP's conversion is an upper bound,
    # tight within ~10% at these sizes, so the exact GDP epsilon must lie in [0.85, 1] x the accountant's
    for target, steps in ((1.0, 10), (8.0, 6)):  # the sizes of the audits below (calibrations cached)
        z = calibrate_noise(target, 1e-5, 1.0, steps)
        acc = epsilon([(z, 1.0, steps)], 1e-5)
        exact = gaussian_epsilon(math.sqrt(steps) / z, 1e-5)
        assert 0.85 * acc <= exact <= acc


def test_lower_bound_is_valid_under_the_null_and_never_above_the_true_epsilon():
    # no signal: a positive bound is a false claim; at 95% confidence at most ~5% of runs may make one
    false = 0
    for s in range(40):
        rng = np.random.default_rng(s)
        inc = rng.random(400) < 0.5
        false += canary_lower_bound(rng.normal(size=400), inc, 1e-5, seed=s)["epsilon_lower_bound"] > 0
    assert false <= 4  # 10% of 40: room for sampling error around 5%
    # a mu = 1.567 Gaussian mechanism (the accountant's epsilon 8 at T=30): true epsilon 7.3; the bound must
    # stay below it and, from 5000 canaries, clear 2
    true_eps = gaussian_epsilon(1.567, 1e-5)
    for s in range(3):
        rng = np.random.default_rng(100 + s)
        inc = rng.random(5000) < 0.5
        lb = canary_lower_bound(rng.normal(size=5000) + 1.567 * inc, inc, 1e-5, seed=s)["epsilon_lower_bound"]
        assert 2.0 <= lb <= true_eps


def test_one_shot_estimate_recovers_the_gaussian_mechanism():
    rng = np.random.default_rng(0)
    inc = rng.random(4000) < 0.5
    est = one_shot_estimate(3.0 * rng.normal(size=4000) + 3.0 * 1.2 * inc, inc, 1e-5)
    assert abs(est["mu"] - 1.2) < 0.1  # standard error of mu from 2000 + 2000 draws is ~0.03
    assert abs(est["epsilon_estimate"] - gaussian_epsilon(1.2, 1e-5)) < 0.5


def test_non_finite_scores_are_refused():
    inc = draw_inclusion(10, 0)
    with pytest.raises(NonFiniteError):
        canary_lower_bound([float("nan")] * 10, inc, 1e-5)
    with pytest.raises(NonFiniteError):
        one_shot_estimate([float("inf")] + [0.0] * 9, inc, 1e-5)


def test_inclusion_coin_is_seeded_and_fair_and_canaries_take_distinct_coordinates():
    assert (draw_inclusion(1000, 3) == draw_inclusion(1000, 3)).all()
    assert 400 < draw_inclusion(1000, 3).sum() < 600
    c = GradientCanaries.draw(500, 600, seed=1, host=None)
    assert len(set(c.coords.tolist())) == 500
    with pytest.raises(FedleakInputError):
        GradientCanaries.draw(700, 600, seed=1, host=None)


def test_client_dp_takes_a_target_epsilon():
    p = plan(["client-dp:epsilon=4,delta=1e-5"]).bind(rounds=12, clients=8)
    agg = p.aggregator
    assert agg.noise is None and agg.target_epsilon == 4.0
    from fedleak.fl import ClientUpdate

    ups = [ClientUpdate("mlp", {}, {"w": torch.ones(3)}, "delta", 1, 1, 0.1, 1, None) for _ in range(8)]
    for _ in range(12):
        agg(ups, torch.Generator().manual_seed(0))
    assert 3.8 <= p.privacy()["epsilon"] <= 4.0  # calibrated to the target, not above it
    with pytest.raises(FedleakInputError):
        plan(["client-dp:epsilon=4,noise=1"])


# --- the audit, end to end (small federations) -----------------------------------------------------------

SMALL = dict(clients=3, rounds=10, num_canaries=2000)


def test_honest_dp_sgd_passes_and_noise_once_per_round_is_caught():
    # claimed epsilon 1: its Gaussian mu is 0.25, which 2000 canaries cannot resolve into a bound above 1;
    # one noise draw for 16 accounted steps multiplies mu by 4 (true epsilon ~6), far beyond the claim
    opts = DPAuditOptions(defense="dp-sgd:epsilon=1,delta=1e-5", canaries="gradient", seed=0, **SMALL)
    honest = run_dp_audit(opts)
    assert honest.epsilon_lower_bound <= honest.epsilon <= 1.0
    assert not honest.verdict.startswith("BROKEN")
    broken = run_dp_audit(
        DPAuditOptions(**{**opts.__dict__, "mechanism": NoiseOncePerRound(target_epsilon=1.0, delta=1e-5)})
    )
    assert broken.epsilon <= 1.0  # the accountant still claims 1
    assert broken.epsilon_lower_bound > broken.epsilon
    assert broken.to_dict()["privacy"]["bound_exceeds_epsilon"] is True
    assert broken.verdict.startswith("BROKEN") and broken.verdict.count(". ") == 0


def test_clipping_after_noise_is_caught():
    # a canary 10x the clip norm keeps its full size when the clip comes after the noise: mu 0.25 -> 2.5
    opts = DPAuditOptions(
        defense="dp-sgd:epsilon=1,delta=1e-5",
        canaries="gradient",
        seed=1,
        magnitude=10.0,
        **SMALL,
        mechanism=ClipAfterNoise(target_epsilon=1.0, delta=1e-5),
    )
    res = run_dp_audit(opts)
    assert res.epsilon <= 1.0 < res.epsilon_lower_bound
    assert res.verdict.startswith("BROKEN")


def test_canary_clients_estimate_tracks_client_dp_and_results_json(tmp_path):
    opts = DPAuditOptions(
        defense="client-dp:epsilon=8,delta=1e-5", canaries="client", clients=3, rounds=6, num_canaries=600, seed=0
    )
    res = run_dp_audit(opts, out=tmp_path)
    # sqrt(6)/z-GDP exactly (all clients every round): its epsilon is ~0.9 x the RDP accountant's; 300 + 300
    # canaries pin mu within ~0.1, which keeps the estimate inside [0.5, 1.2] x
    assert 0.5 * res.epsilon <= res.epsilon_estimate <= 1.2 * res.epsilon
    assert 0 <= res.epsilon_lower_bound <= res.epsilon
    import json

    d = json.loads((tmp_path / "results.json").read_text())["privacy"]
    assert d["canaries"]["total"] == 600 == d["canaries"]["included"] + d["canaries"]["held_out"]
    assert d["runs"] == 1 and d["epsilon"] == res.epsilon and d["delta"] == 1e-5
    assert (tmp_path / "canary_scores.png").stat().st_size > 1000


def test_cli_refuses_a_mismatched_defense_in_one_line(tmp_path, capsys):
    rc = main(["audit-dp", "--defense", "dp-sgd:epsilon=8", "--canaries", "client", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "client-dp" in err[0]
    assert not (tmp_path / "o" / "results.json").exists()
    rc = main(["audit-dp", "--defense", "dp-sgd:epsilon=8", "--canaries", "nope", "--out", str(tmp_path / "o")])
    assert rc == 2
