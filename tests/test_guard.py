"""The leakage guard on the client: the torch-only detectors (a malicious global model, an exactly readable
update) and the Flower client mod that acts on them (warn, clip, refuse)."""

from __future__ import annotations

import pytest
import torch

from fedleak.attacks.inversion import imprint_model
from fedleak.data import load
from fedleak.fl import client_update
from fedleak.flower.leakage import guard_decision, inspect_global_model, update_exposure
from fedleak.models import build


@pytest.fixture(scope="module")
def digits():
    return load("digits")


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _sent_after(model, records, lr=0.1):
    """The state a client sends after one FedAvg step on ``records`` (one batch)."""
    u = client_update(model, records, local_epochs=1, batch_size=len(records), lr=lr)
    return u, {k: v + u.payload[k] if k in u.payload else v for k, v in u.global_state.items()}


def _trained_honest(digits, steps=20):
    model = build("mlp", digits.spec, seed=1)
    for i in range(steps):
        u = client_update(model, digits.subset(range(16 * i, 16 * i + 16)), local_epochs=1, batch_size=16, lr=0.2)
        model.load_state_dict({k: v + u.payload[k] if k in u.payload else v for k, v in u.global_state.items()})
    return model


def test_guard_flags_the_imprint_model_and_not_honest_ones(digits):
    """The imprint layer's rows all read one direction (and its read-back columns all write one vector); a honest
    model, freshly initialised or trained, has no two parallel rows, no trap or sparse rows."""
    evil = imprint_model(build("mlp", digits.spec, seed=0), digits.spec, bins=64)
    found = inspect_global_model(_state(evil))
    kinds = {(c.layer, c.kind) for c in found}
    assert ("imprint.linear0", "duplicated rows") in kinds
    assert ("imprint.linear1", "duplicated columns") in kinds
    assert next(c for c in found if c.kind == "duplicated rows").fraction == 1.0  # every bin, not a few
    assert inspect_global_model(_state(build("mlp", digits.spec, seed=0))) == []
    assert inspect_global_model(_state(_trained_honest(digits))) == []


def test_guard_flags_trap_weights(digits):
    """Trap weights (negative entries scaled up so each unit fires for few records) are flagged; the same layer
    before scaling is not."""
    model = build("mlp", digits.spec, seed=0)
    state = _state(model)
    w_name = next(k for k, v in state.items() if v.dim() == 2)
    assert inspect_global_model(state) == []
    w = state[w_name]
    state[w_name] = torch.where(w < 0, 3.0 * w, w)
    (c,) = [c for c in inspect_global_model(state) if c.kind == "trap weights"]
    assert c.layer == w_name.rsplit(".", 1)[0] and c.fraction > 2.5  # the scale we applied, about 3


def test_guard_finds_the_exact_readout_of_a_one_record_update_and_not_of_a_batch(digits):
    """One record, one step: the first layer's weight delta is rank one and delta_W[i] / delta_b[i] is the record
    itself (checked here against the record). A batch of 8 is rank 8: no exact linear read-out."""
    model = build("mlp", digits.spec, seed=0)
    u, sent = _sent_after(model, digits.subset([5]))
    readouts = [e for e in update_exposure(u.payload) if e.kind == "linear read-out"]
    assert readouts and all(e.exact and e.rank == 1 for e in readouts)  # every layer reads out its own input
    (e,) = [e for e in readouts if u.payload[f"{e.layer}.weight"].shape[1] == 64]  # the first: the record
    gw, gb = u.payload[f"{e.layer}.weight"], u.payload[f"{e.layer}.bias"]
    i = int(gb.abs().argmax())
    record = digits.inputs([5]).flatten()
    assert torch.allclose(gw[i] / gb[i], record, atol=1e-4)  # the read-out is the record
    u8, _ = _sent_after(model, digits.subset(range(8)))
    assert not any(e.kind == "linear read-out" for e in update_exposure(u8.payload))


def test_guard_policies_on_an_exact_update(digits):
    """warn sends as is, clip sends the readable layer unchanged from the received model (its update cut), refuse
    sends nothing; a batch of 32 through the honest model passes even under refuse."""
    model = build("mlp", digits.spec, seed=0)
    received = _state(model)
    _, sent = _sent_after(model, digits.subset([3]))
    assert guard_decision(received, sent, "warn").action == "send"
    clip = guard_decision(received, sent, "clip")
    assert clip.action == "withhold" and clip.withheld
    assert guard_decision(received, sent, "refuse").action == "refuse"
    _, sent32 = _sent_after(model, digits.subset(range(32)))
    ok = guard_decision(received, sent32, "refuse")
    assert ok.action == "send" and ok.constructions == []


def test_guard_mod_in_a_flower_client_refuses_clips_and_reports(digits, monkeypatch):
    """The client mod around a ClientApp's train function: under refuse the reply is an error and carries no
    arrays; under clip the first layer comes back as received; the findings ride in the reply's records."""
    pytest.importorskip("flwr")
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from fedleak.flower import LeakageGuard
    from fedleak.flower.guard import FINDINGS, RECORD

    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1, raising=False)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0, raising=False)
    model = build("mlp", digits.spec, seed=0)
    received = _state(model)
    _, sent = _sent_after(model, digits.subset([3]))
    msg = Message(
        RecordDict({"arrays": ArrayRecord(received), "config": ConfigRecord({})}), dst_node_id=1, message_type="train"
    )
    ctx = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})

    def train(m, c):
        return Message(
            RecordDict({"arrays": ArrayRecord(sent), "metrics": MetricRecord({"num-examples": 1})}), reply_to=m
        )

    refused = LeakageGuard("refuse")(msg, ctx, train)
    assert refused.has_error() and "refused" in refused.error.reason
    clipped = LeakageGuard("clip")(msg, ctx, train)
    back = clipped.content["arrays"].to_torch_state_dict()
    layer = LeakageGuard("clip")
    layer(msg, ctx, train)
    withheld = [f"{lay}.weight" for lay in layer.last.withheld]
    assert withheld and all(
        torch.equal(back[w], received[w]) and not torch.equal(sent[w], received[w]) for w in withheld
    )
    assert clipped.content.metric_records[RECORD]["withheld"] == len(withheld)
    assert any("linear read-out" in line for line in clipped.content.config_records[FINDINGS]["findings"])
    assert clipped.content.metric_records[RECORD]["exact_exposures"] >= 1
