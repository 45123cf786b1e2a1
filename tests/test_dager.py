"""DAGER-style exact batch recovery from a decoder LM's update (fedleak.attacks.inversion.dager)."""

from __future__ import annotations

import pytest
import torch

import fedleak
from fedleak.attacks.inversion.text import invert_text
from fedleak.errors import FedleakInputError

SMALL = "gpt:dim=128,heads=4"  # 4 records x 18 positions = 72 inputs < 128: the spans are proper subspaces


@pytest.fixture(scope="module")
def data():  # noqa: ANN201
    return fedleak.data.load("demo-records")


def _rows(t: torch.Tensor) -> list[tuple[int, ...]]:
    return sorted(map(tuple, t.tolist()))


@pytest.mark.parametrize("picks", [[0], [3, 50, 101, 200]])
def test_dager_recovers_every_sequence_exactly_and_reads_the_batch_size(data, picks) -> None:  # noqa: ANN001
    model = fedleak.models.build(SMALL, data.spec, seed=1)
    update = fedleak.fl.client_update(model, data.subset(picks))
    rec = invert_text([update], "dager")[0]
    assert _rows(rec.tokens) == _rows(data.raw[picks])  # every token of every record, nothing extra
    assert rec.extras["sequences_found"] == len(picks)
    assert rec.extras["batch_size_from_rank"] == len(picks)  # layer-2 rank minus the shorter prefixes


def test_fedavg_delta_is_read_exactly_at_the_tolerance_whose_prefixes_match_the_layer2_rank(data) -> None:  # noqa: ANN001
    picks = [3, 50, 101, 200]
    model = fedleak.models.build("gpt:dim=256,heads=4", data.spec, seed=0)
    update = fedleak.fl.client_update(model, data.subset(picks), local_steps=2, lr=0.01)
    rec = invert_text([update], "dager")[0]
    assert _rows(rec.tokens) == _rows(data.raw[picks])
    ids = data.raw[picks]
    distinct = {tuple(r[: p + 1].tolist()) for r in ids for p in range(ids.shape[1]) if r[p] != 0}
    assert sum(rec.extras["prefixes"]) == rec.extras["rank_2"][-1] == len(distinct)  # one layer-2 input each


def test_the_span_check_rejects_a_record_not_in_the_batch(data) -> None:  # noqa: ANN001
    from fedleak.attacks.inversion.dager import row_span, span_distance

    model = fedleak.models.build(SMALL, data.spec, seed=1)
    update = fedleak.fl.client_update(model, data.subset([3, 50]))
    basis = row_span(update.payload["blocks.1.attn.qkv.weight"], 1e-7)
    with torch.no_grad():
        ids = data.raw[[3, 50]]
        inside = model.blocks[1].ln1(model.hidden(ids, upto=1))[ids != 0]  # real positions (PAD is masked)
        padded = model.blocks[1].ln1(model.hidden(ids, upto=1))[ids == 0]
        other = data.raw[7]
        outside = model.blocks[1].ln1(model.hidden(other[None], upto=1))[0][other != 0]
    assert span_distance(inside, basis).max() < 1e-4  # the batch's own layer-2 inputs: float32 noise only
    assert span_distance(outside[1:], basis).min() > 1e-2  # another record's (its first token may be shared)
    assert span_distance(padded, basis).min() > 1e-2  # PAD inputs have no loss: the client's gradient omits them


def test_lora_update_with_more_inputs_than_the_rank_is_reported_vacuous(data) -> None:  # noqa: ANN001
    model = fedleak.models.build(SMALL + ",lora=8", data.spec, seed=1)
    update = fedleak.fl.client_update(model, data.subset([3, 50]))
    assert set(update.payload) == {f"blocks.{i}.attn.qkv.{ab}" for i in (0, 1) for ab in ("lora_a", "lora_b")}
    rec = invert_text([update], "dager", max_prefixes=2000)[0]
    assert rec.extras["span_vacuous"]  # 36 inputs in an 8-dimensional adapter space: every vector passes


def _second_round_lora(data, spec: str):  # noqa: ANN001, ANN202
    """A LoRA model after one federated round (its B adapters trained away from LoRA's B = 0 start)."""
    from fedleak.fl import FedConfig, Federation

    model = fedleak.models.build(spec, data.spec, seed=1)
    fed = Federation(
        model, data.subset(range(100, 140)), data.subset(range(140, 160)), FedConfig(clients=2, rounds=1, lr=0.5)
    )
    list(fed.run(keep_updates=False))
    return model


def test_lora_first_round_sends_no_input_span_in_a(data) -> None:  # noqa: ANN001
    model = fedleak.models.build(SMALL + ",lora=8", data.spec, seed=1)
    update = fedleak.fl.client_update(model, data.subset([0]))
    assert update.payload["blocks.0.attn.qkv.lora_a"].abs().max() == 0  # dA = B^T dW and B starts at 0


def test_lora_with_more_tokens_than_the_rank_is_saturated_and_finds_nothing(data) -> None:  # noqa: ANN001
    model = _second_round_lora(data, SMALL + ",lora=8")
    update = fedleak.fl.client_update(model, data.subset([0]))  # 15 tokens, rank 8
    rec = invert_text([update], "dager", max_prefixes=2000)[0]
    assert rec.extras["rank_1"][-1] == 8 and rec.extras["span_saturated"]
    assert rec.extras["sequences_found"] == 0  # reported as nothing found, never a guess


def test_lora_with_the_rank_above_the_tokens_recovers_exactly_from_the_adapters(data) -> None:  # noqa: ANN001
    model = _second_round_lora(data, SMALL + ",lora=32")
    update = fedleak.fl.client_update(model, data.subset([0]))  # 15 tokens < rank 32: dA spans the inputs
    assert set(update.payload) == {f"blocks.{i}.attn.qkv.lora_{ab}" for i in (0, 1) for ab in "ab"}
    rec = invert_text([update], "dager")[0]
    assert _rows(rec.tokens) == _rows(data.raw[[0]])
    assert rec.extras["rank_1"][-1] == 15 and not rec.extras["span_saturated"]  # dA's rank: one per token


def test_dager_refuses_a_model_it_cannot_attack(data) -> None:  # noqa: ANN001
    model = fedleak.models.build("gpt:layers=1,dim=64,heads=4", data.spec, seed=0)
    update = fedleak.fl.client_update(model, data.subset([0]))
    with pytest.raises(FedleakInputError, match="2 blocks"):
        invert_text([update], "dager")


def test_gpt_spec_errors_are_one_line(data) -> None:  # noqa: ANN001
    with pytest.raises(FedleakInputError, match="dim % heads"):
        fedleak.models.build("gpt:dim=10,heads=4", data.spec)
    with pytest.raises(FedleakInputError, match="unknown option"):
        fedleak.models.build("gpt:width=10", data.spec)
