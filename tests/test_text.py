"""Text: tokenizers, text datasets, text models, text metrics, token-set recovery and full recovery (TAG)."""

from __future__ import annotations

import json

import pytest
import torch

import fedleak
from fedleak.attacks.inversion.text import TEXT_ATTACKS, invert_text
from fedleak.attacks.inversion.tokens import set_scores
from fedleak.data import DataSpec
from fedleak.data.text import text_dataset
from fedleak.data.tokenize import PAD_ID, CharTokenizer, WordTokenizer
from fedleak.errors import FedleakInputError
from fedleak.metrics.text import exact_match, lcs_length, match_sequences, rouge_l, rouge_n, token_accuracy
from tests.conftest import run_cli

SMALL = "transformer:16,1,heads=2"  # the test model: width 16, one block


@pytest.fixture(scope="module")
def demo():
    return fedleak.data.load("demo-records")


# ---------------------------------------------------------------- tokenizers and datasets


def test_word_and_char_tokenizers_round_trip_with_pad_zero():
    lines = ["patient Ana Lee, born 1984", "tenant Bo Kim"]
    word = WordTokenizer.fit(lines)
    assert word.tokens[:4] == ("<pad>", "<unk>", "patient", "Ana") and word.pad_id == PAD_ID == 0
    ids = word.encode(lines[0], length=9)
    assert ids[-3:] == [0, 0, 0] and word.decode(ids) == lines[0]
    assert word.encode("patient Zed")[1] == 1  # unknown word -> UNK
    char = CharTokenizer.fit(lines)
    assert char.decode(char.encode(lines[1], length=20)) == lines[1]
    assert len(char.encode(lines[0], length=5)) == 5


def test_demo_records_dataset(demo):
    tok = demo.extras["tokenizer"]
    assert demo.spec.modality == "text" and demo.spec.vocab_size == tok.vocab_size
    assert len(demo) == 240 and demo.spec.shape == (18,) and demo.raw.dtype == torch.long
    assert set(demo.spec.class_names) == {"patient", "customer", "employee", "tenant"}
    for i in (0, 7, 239):
        assert tok.decode(demo.raw[i]) == demo.extras["lines"][i]
        assert demo.spec.class_names[demo.labels[i]] == demo.extras["lines"][i].split()[0]
    chars = fedleak.data.load("demo-records?tokenizer=char&max_len=24")
    assert chars.spec.shape == (24,) and chars.spec.vocab_size < 80


def test_text_path_dataset_labels_and_errors(tmp_path, tmp_cache):
    f = tmp_path / "notes.txt"
    f.write_text("spam\tbuy cheap pills\nham\tlunch at noon?\n\nspam\twin a prize\n")
    ds = fedleak.data.load(f"text:{f}?tokenizer=char")
    assert ds.spec.class_names == ("spam", "ham") and ds.labels.tolist() == [0, 1, 0]
    assert ds.extras["tokenizer"].decode(ds.raw[1]) == "lunch at noon?"
    with pytest.raises(FedleakInputError, match="does not|not a file"):
        fedleak.data.load(f"text:{tmp_path / 'missing.txt'}")
    with pytest.raises(FedleakInputError, match="at least two"):
        text_dataset(["same a", "same b"], "x")
    with pytest.raises(FedleakInputError, match="option"):
        fedleak.data.load(f"text:{f}?colour=red")


# ---------------------------------------------------------------- models


@pytest.mark.parametrize("spec", [SMALL, "transformer", "lstm:16,emb=8"])
def test_text_models_take_ids_and_soft_one_hot_alike(demo, spec):
    model = fedleak.models.build(spec, demo.spec, seed=0)
    x, _ = demo.tensors([0, 1, 2])
    out = model(x)
    assert out.shape == (3, 4)
    onehot = torch.nn.functional.one_hot(x, demo.spec.vocab_size).float()
    assert torch.allclose(model(onehot), out, atol=1e-5)


def test_text_models_refuse_images():
    with pytest.raises(FedleakInputError, match="text dataset"):
        fedleak.models.build("transformer", DataSpec("img", "image", (1, 8, 8), 2, ("a", "b"), (0.0,), (1.0,)))


# ---------------------------------------------------------------- metrics


def test_text_metrics_by_hand():
    assert token_accuracy([4, 5, 6, 0, 0], [4, 6, 6, 0, 0]) == pytest.approx(2 / 3)
    assert token_accuracy([4, 5], [0, 4, 5]) == 1.0  # PAD is dropped before comparing
    assert exact_match([4, 5, 0], [4, 5]) and not exact_match([4, 5], [5, 4])
    assert lcs_length([1, 2, 3, 4, 5], [2, 9, 4, 5]) == 3
    # true 1 2 3 4 / recovered 1 2 4 3: unigrams all shared; bigrams {12,23,34} vs {12,24,43}: 1 shared
    assert rouge_n([1, 2, 3, 4], [1, 2, 4, 3], 1) == 1.0
    assert rouge_n([1, 2, 3, 4], [1, 2, 4, 3], 2) == pytest.approx(1 / 3)
    assert rouge_l([1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(0.75)
    assert rouge_l([1, 2], [7, 8]) == 0.0
    assert match_sequences([[1, 2, 3], [7, 8, 9]], [[7, 8, 0], [1, 2, 3]]) == [1, 0]


# ---------------------------------------------------------------- token-set recovery


@pytest.mark.parametrize("spec", [SMALL, "lstm:16,emb=8"])
@pytest.mark.parametrize("batch", [1, 4])
def test_token_set_is_exact_for_one_record_and_a_batch(demo, spec, batch):
    model = fedleak.models.build(spec, demo.spec, seed=0)
    picks = [list(range(i, i + batch)) for i in (0, 40, 80)]
    ups = [fedleak.fl.client_update(model, demo.subset(p)) for p in picks]
    ups.append(fedleak.fl.client_update(model, demo.subset(picks[0]), local_steps=3, batch_size=batch, lr=0.1))
    recs = invert_text(ups, attack="tokens")
    for p, rec in zip([*picks, picks[0]], recs, strict=True):
        used = set(demo.raw[p].flatten().tolist())
        assert set(rec.token_set.tolist()) == used  # exact: nothing missing, nothing extra (PAD too)
        assert set_scores(demo.raw[p], rec.token_set)["exact"] == 1.0
        assert rec.tokens is None


def test_text_attack_registry():
    assert TEXT_ATTACKS.names() == ["dager", "tag", "tokens"]
    with pytest.raises(FedleakInputError, match="unknown text attack"):
        invert_text([], attack="tga")


# ---------------------------------------------------------------- full recovery


def test_tag_recovers_records_fedsgd(demo):
    model = fedleak.models.build(SMALL, demo.spec, seed=0)
    picks = [3, 101]
    ups = [fedleak.fl.client_update(model, demo.subset([i])) for i in picks]
    recs = invert_text(ups, attack="tag", iterations=10, restarts=2, seed=0)
    accs = [token_accuracy(demo.raw[i], r.tokens[0]) for i, r in zip(picks, recs, strict=True)]
    assert min(accs) >= 0.9, accs
    assert [int(r.labels[0]) for r in recs] == demo.labels[picks].tolist()  # recovered, not granted
    assert all(r.labels_recovered for r in recs)


def test_tag_same_seed_same_result(demo):
    model = fedleak.models.build(SMALL, demo.spec, seed=1)
    u = fedleak.fl.client_update(model, demo.subset([5]))
    a = invert_text(u, attack="tag", iterations=5, restarts=1, refine=1, swaps=False, seed=3, init="random")[0]
    b = invert_text(u, attack="tag", iterations=5, restarts=1, refine=1, swaps=False, seed=3, init="random")[0]
    assert torch.equal(a.tokens, b.tokens) and a.distance == b.distance


def test_tag_recovers_a_fedavg_record(demo):
    model = fedleak.models.build(SMALL, demo.spec, seed=0)
    u = fedleak.fl.client_update(model, demo.subset([12]), local_steps=2, batch_size=1, lr=0.05)
    assert u.kind == "delta"
    rec = invert_text(u, attack="tag", iterations=10, restarts=2, seed=0)[0]
    assert token_accuracy(demo.raw[12], rec.tokens[0]) >= 0.9


# ---------------------------------------------------------------- command line


def test_cli_text_tokens_writes_results_and_table(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_cli(
        [
            "invert",
            "--modality",
            "text",
            "--dataset",
            "demo-records",
            "--model",
            SMALL,
            "--attack",
            "tokens",
            "--num-images",
            "4",
            "--batch-size",
            "2",
            "--seed",
            "0",
            "--out",
            out,
        ],
        capsys,
    )
    assert code == 0, err
    r = json.loads((out / "results.json").read_text())
    assert r["kind"] == "inversion" and r["attack"] == "tokens" and r["dataset"] == "demo-records"
    assert len(r["targets"]) == 4 and {"index", "label", "text", "recovered_text", "seconds"} <= set(r["targets"][0])
    assert r["summary"]["token_set_exact_rate"] == 1.0 and r["summary"]["label_accuracy"] == 1.0
    assert "| index |" in (out / "reconstructions.md").read_text()


def test_cli_text_bad_input_is_one_line(tmp_path, capsys):
    code, _, err = run_cli(
        [
            "invert",
            "--modality",
            "text",
            "--dataset",
            "digits",
            "--model",
            "transformer",
            "--attack",
            "tag",
            "--out",
            tmp_path / "x",
        ],
        capsys,
    )
    assert code == 2 and "text dataset" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_position_gradient_rows_give_each_once_used_token_its_place(demo):
    from fedleak.attacks.inversion.text import TagOptions, _Case

    model = fedleak.models.build(SMALL, demo.spec, seed=0)
    u = fedleak.fl.client_update(model, demo.subset([0]))
    case = _Case([u], TagOptions())
    guess = case.sets[0][case.position_scores()[0].argmax(1)]
    true = demo.raw[0]
    once = torch.tensor([int((true == t).sum()) == 1 for t in true])
    assert once.sum() >= 10 and torch.equal(guess[once], true[once])


@pytest.mark.parametrize(
    "module",
    [
        "data.tokenize",
        "data.text",
        "models.text",
        "metrics.text",
        "attacks.inversion.tokens",
        "attacks.inversion.text",
        "audit.text_inversion",
    ],
)
def test_text_doctests(module):
    import doctest
    import importlib

    failed, tried = doctest.testmod(importlib.import_module(f"fedleak.{module}"))
    assert failed == 0 and tried > 0
