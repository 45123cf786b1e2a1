"""Federated training of the decoder LM (``gpt``) on next-token prediction, full and LoRA clients."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest
import torch
from conftest import run_cli

import fedleak
from fedleak.fl import FedConfig, Federation, evaluate

TINY = "gpt:dim=32,heads=2"


@pytest.fixture(scope="module")
def split():  # noqa: ANN201
    data = fedleak.data.load("demo-records")
    return data, *data.split(0.25, seed=0)


def test_training_a_tiny_gpt_lowers_next_token_loss_below_uniform_and_beats_the_unigram_guess(split) -> None:  # noqa: ANN001
    data, train, test = split
    net = fedleak.models.build(TINY, data.spec, seed=0)
    fed = Federation(net, train, test, FedConfig(clients=2, rounds=4, batch_size=16, lr=0.5, seed=0))
    acc0, loss0 = evaluate(net, fed.test_x, fed.test_y)
    last = list(fed.run(keep_updates=False))[-1]
    # an untrained head guesses near-uniformly: its loss is about ln(V); one that learnt nothing stays there
    assert abs(loss0 - math.log(data.spec.vocab_size)) < 0.5
    assert last.test_loss < math.log(data.spec.vocab_size) - 1.0  # perplexity at least e times below uniform
    # next-token accuracy over the test records' real positions, against always guessing the most frequent
    # next token of the training records (what word frequencies alone give): a model of context beats it twice
    tt, te = net.training_targets(train.raw), net.training_targets(test.raw)
    top = Counter(tt[tt != -100].tolist()).most_common(1)[0][0]
    unigram = float((te[te != -100] == top).float().mean())
    assert last.test_accuracy > 2 * unigram


def test_padding_is_masked_in_the_loss_and_the_score(split) -> None:  # noqa: ANN001
    data, _, test = split
    net = fedleak.models.build(TINY, data.spec, seed=0)
    x = test.raw[:8]
    t = net.training_targets(x)
    assert ((t == -100) == (x == 0)).all()  # exactly the PAD inputs predict nothing
    with torch.no_grad():
        logits = net(x)
    real = x != 0
    by_hand = torch.nn.functional.cross_entropy(logits.transpose(1, 2)[real], t[real])
    acc_hand = float((logits.argmax(1)[real] == t[real]).float().mean())
    acc, loss = evaluate(net, x, torch.zeros(len(x), dtype=torch.long))  # the class labels are not used
    assert loss == pytest.approx(float(by_hand), rel=1e-5) and acc == pytest.approx(acc_hand)


def test_lora_clients_send_only_adapters_and_leave_the_base_model_unchanged(split) -> None:  # noqa: ANN001
    data, train, test = split
    net = fedleak.models.build(TINY + ",lora=4", data.spec, seed=0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    adapters = {f"blocks.{i}.attn.qkv.lora_{ab}" for i in (0, 1) for ab in "ab"}
    for mode in ("fedavg", "fedsgd"):
        fed = Federation(net, train, test, FedConfig(clients=2, rounds=2, batch_size=16, lr=0.5, mode=mode, seed=0))
        for r in fed.run():
            for u in r.updates:
                assert set(u.payload) == adapters  # nothing else crossed the wire
    after = net.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == adapters  # the base weights (embeddings, attention, MLP, head) never moved


def test_train_cli_writes_next_token_metrics_and_weights_the_attack_loads(tmp_path, capsys) -> None:  # noqa: ANN001
    out = tmp_path / "run"
    args = ["train", "--dataset", "demo-records", "--model", TINY + ",lora=4", "--clients", "2", "--rounds", "2"]
    code, stdout, err = run_cli([*args, "--lr", "0.5", "--seed", "0", "--out", out], capsys)
    assert code == 0, err
    m = json.loads((out / "metrics.json").read_text())
    assert m["objective"] == "next-token" and "test_accuracy" not in m["rounds"][-1]
    row = m["rounds"][-1]
    assert row["test_perplexity"] == pytest.approx(math.exp(row["test_loss"]))
    assert 0 <= row["test_next_token_accuracy"] <= 1 and m["initial"]["test_loss"] > 0
    data = fedleak.data.load("demo-records")
    loaded = fedleak.models.build(TINY + ",lora=4", data.spec, seed=1, weights=out / "model.safetensors")
    trained = loaded.blocks[0].attn.qkv.lora_b
    assert trained.abs().max() > 0  # the adapters trained (LoRA starts with B = 0) and came back from the file


def test_a_language_model_on_images_is_refused_in_one_line(tmp_path, capsys) -> None:  # noqa: ANN001
    code, _, err = run_cli(
        ["train", "--dataset", "digits", "--model", TINY, "--rounds", "1", "--out", tmp_path / "r"], capsys
    )
    assert code == 2 and len(err.strip().splitlines()) == 1
