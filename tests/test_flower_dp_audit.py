"""Flower's DP wrappers audited with canary clients (#18): the canary clients join the replies Flower's own
DP wrapper aggregates; an honest setup's one-shot estimate tracks Flower's accountant, and broken setups (the
noise computed for 10x the clients per round; client-side clipping without ``fixedclipping_mod``) are flagged.

The first tests drive the wrappers round by round with hand-made replies (no Ray: Flower's strategies, mods
and noise are the real ones, the real clients are random updates); the last runs fedleak's federation on
Flower's simulation engine through ``run_dp_audit`` (``fedleak audit-dp --flower server``).
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.serverapp.strategy import (  # noqa: E402
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideFixedClipping,
    FedAvg,
)

from fedleak.audit.dpaudit import DPAuditOptions, run_dp_audit  # noqa: E402
from fedleak.defenses.accounting import calibrate_noise, epsilon  # noqa: E402
from fedleak.defenses.canaries import cosine_scores, draw_inclusion, unit_directions  # noqa: E402
from fedleak.errors import FedleakInputError  # noqa: E402
from fedleak.flower.dp_audit import CanaryClients, flower_epsilon  # noqa: E402
from fedleak.metrics.dp_audit import canary_lower_bound, one_shot_estimate  # noqa: E402

DELTA = 1e-5


@pytest.fixture(autouse=True)
def flower_env(tmp_path, monkeypatch):
    """Flower writes under FLWR_HOME (a temporary folder), no telemetry; hand-made messages need a run id."""
    from flwr.supercore.task_identity import TaskIdentity

    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "flwr-home"))
    monkeypatch.setenv("FLWR_TELEMETRY_ENABLED", "0")
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1, raising=False)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0, raising=False)
    lg = logging.getLogger("flwr")
    level = lg.level
    lg.setLevel(logging.WARNING)  # Flower's wrappers log a line per reply
    yield
    lg.setLevel(level)


class FakeGrid:
    def __init__(self, nodes):
        self.nodes = list(nodes)

    def get_node_ids(self):
        return self.nodes


def _audit_by_hand(dp_class, *, claimed, rounds=2, m=300, dim=1000, magnitude=2.0, mods=(), seed=0):
    """``rounds`` rounds of 3 real clients (random updates of norm 3) and ``m`` canary clients (half included)
    through Flower's FedAvg wrapped in ``dp_class`` (noise calibrated to ``claimed`` for every client in every
    round), scored from the final model delta; (scores, coins, Flower's accountant's epsilon)."""
    included = draw_inclusion(m, seed)
    n = 3 + int(included.sum())
    z = calibrate_noise(claimed, DELTA, 1.0, rounds)
    dp = dp_class(FedAvg(fraction_evaluate=0.0, min_train_nodes=3, min_available_nodes=3), z, 1.0, n)
    directions = unit_directions(m, dim, seed)
    s = CanaryClients(dp, directions, included, magnitude, ["w"], mods=list(mods), seed=seed)
    rng = np.random.default_rng(seed)
    arrays, grid = ArrayRecord({"w": Array(np.zeros(dim, np.float32))}), FakeGrid([11, 12, 13])
    for t in range(1, rounds + 1):
        sent = list(s.configure_train(t, arrays, ConfigRecord({}), grid))
        replies = []
        for msg in sent:
            w = msg.content["arrays"]["w"].numpy()
            u = rng.normal(size=dim).astype(np.float32)
            new = w + 3.0 * u / np.linalg.norm(u)
            content = RecordDict(
                {"arrays": ArrayRecord({"w": Array(new)}), "metrics": MetricRecord({"num-examples": 10})}
            )
            replies.append(Message(content, reply_to=msg))
        arrays, _ = s.aggregate_train(t, replies)
    scores = cosine_scores(directions, s.final_delta())
    claim = flower_epsilon(z, rounds, n, DELTA)["epsilon"]
    return scores, included, claim


def test_flower_accountant_agrees_with_fedleaks_for_the_same_mechanism():
    # both are RDP accountants of T Gaussian releases without amplification: the same maths, within 1%
    for z, t in ((1.0, 6), (0.8, 30)):
        assert flower_epsilon(z, t, 100, DELTA)["epsilon"] == pytest.approx(epsilon([(z, 1.0, t)], DELTA), rel=0.01)


def test_honest_server_side_wrapper_tracks_the_claim_and_noise_for_ten_times_the_clients_is_flagged():
    scores, inc, claim = _audit_by_hand(DifferentialPrivacyServerSideFixedClipping, claimed=8.0, m=400, dim=4000)
    assert 7.8 <= claim <= 8.0  # Flower's accountant, for the noise calibrated to 8 by fedleak's
    est = one_shot_estimate(scores, inc, DELTA)["epsilon_estimate"]
    # sqrt(2)/z-GDP exactly: ~0.9 x the RDP claim; 200 + 200 canaries pin mu within ~0.12 (dim 4000 keeps the
    # other canaries' overlap with a direction, ~200/4000 of the noise variance, small)
    assert 0.5 * claim <= est <= 1.2 * claim
    assert canary_lower_bound(scores, inc, DELTA)["epsilon_lower_bound"] <= claim
    # told 10x the clients per round, Flower divides the noise by 10: mu 10x the claim's (0.25 -> 2.5)
    broken = lambda s, z, c, n: DifferentialPrivacyServerSideFixedClipping(s, z, c, 10 * n)  # noqa: E731
    scores, inc, claim = _audit_by_hand(broken, claimed=1.0)
    assert canary_lower_bound(scores, inc, DELTA)["epsilon_lower_bound"] > claim


def test_client_side_clipping_holds_with_fixedclipping_mod_and_is_flagged_without_it():
    from flwr.clientapp.mod import fixedclipping_mod

    # canaries 10x the clipping norm: Flower's mod clips them to 1 (the claim holds); a ClientApp without the
    # mod sends them whole to a wrapper that only adds noise (mu 10x the claim's, 0.25 -> 2.5)
    kw = dict(claimed=1.0, magnitude=10.0)
    scores, inc, claim = _audit_by_hand(DifferentialPrivacyClientSideFixedClipping, mods=[fixedclipping_mod], **kw)
    assert canary_lower_bound(scores, inc, DELTA)["epsilon_lower_bound"] <= claim
    assert one_shot_estimate(scores, inc, DELTA)["epsilon_estimate"] <= 1.5 * claim  # 150 + 150: se(mu) ~0.12
    scores, inc, claim = _audit_by_hand(DifferentialPrivacyClientSideFixedClipping, mods=[], **kw)
    assert canary_lower_bound(scores, inc, DELTA)["epsilon_lower_bound"] > claim


def test_flower_option_is_refused_outside_client_canaries():
    with pytest.raises(FedleakInputError, match="--canaries client"):
        run_dp_audit(DPAuditOptions(defense="dp-sgd:epsilon=8,delta=1e-5", canaries="gradient", flower="server"))
    with pytest.raises(FedleakInputError, match="server"):
        run_dp_audit(DPAuditOptions(defense="client-dp:epsilon=8,delta=1e-5", canaries="client", flower="both"))


@pytest.mark.slow
def test_flower_run_estimate_tracks_flowers_accountant_and_writes_results_json(tmp_path):
    """fedleak's federation on Flower's simulation engine (Ray), Flower's server-side wrapper, 600 canaries;
    most of its time is Ray and the client actors starting (67-88 s wall here with other work running)."""
    ray = pytest.importorskip("ray")
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    try:
        opts = DPAuditOptions(
            defense="client-dp:epsilon=8,delta=1e-5",
            canaries="client",
            flower="server",
            clients=3,
            rounds=6,
            num_canaries=600,
            seed=0,
        )
        res = run_dp_audit(opts, out=tmp_path)
    finally:
        ray.shutdown()
        torch.set_num_threads(threads)
    # sqrt(6)/z-GDP exactly (every client every round): ~0.9 x the RDP claim; 300 + 300 canaries pin mu to ~0.1
    assert 0.5 * res.epsilon <= res.epsilon_estimate <= 1.2 * res.epsilon
    assert 0 <= res.epsilon_lower_bound <= res.epsilon and not res.bound_exceeds_epsilon
    d = json.loads((tmp_path / "results.json").read_text())
    p = d["privacy"]
    assert d["engine"] == "flower" and d["mechanism"] == "DifferentialPrivacyServerSideFixedClipping"
    assert p["accountant"]["accountant"] == "flower-rdp" and 7.8 <= p["epsilon"] <= 8.0  # calibrated to 8
    assert p["accountant"]["clients_per_round"] == 3 + p["canaries"]["included"]
    assert p["canaries"]["total"] == 600 and p["epsilon_estimate"] == res.epsilon_estimate
    assert os.path.getsize(tmp_path / "canary_scores.png") > 1000
