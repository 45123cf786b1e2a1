"""Your own model wherever a spec goes: a file.py:factory spec on the command line (trained by fedleak train,
attacked with those weights), any nn.Module in Python with no registration, and one clear line for a missing
factory or weights that do not fit."""

from __future__ import annotations

import json

import torch
from conftest import run_cli
from torch import nn

import fedleak

FACTORY = """import torch.nn as nn
def build(in_shape, num_classes):
    n = 1
    for s in in_shape:
        n *= s
    return nn.Sequential(nn.Flatten(), nn.Linear(n, 64), nn.ReLU(), nn.Linear(64, num_classes))
"""


def test_your_file_trains_and_its_trained_weights_are_attacked(tmp_path, capsys):
    (tmp_path / "mine.py").write_text(FACTORY)
    spec = f"{tmp_path / 'mine.py'}:build"
    code, _, err = run_cli(
        ["train", "--dataset", "digits", "--model", spec, "--clients", "4", "--rounds", "2", "--out", tmp_path / "t"],
        capsys,
    )
    assert code == 0, err
    weights = tmp_path / "t" / "model.safetensors"
    args = ["invert", "--dataset", "digits", "--model", spec, "--attack", "analytic", "--indices", "0"]
    code, _, err = run_cli([*args, "--weights", weights, "--out", tmp_path / "i"], capsys)
    assert code == 0, err
    res = json.loads((tmp_path / "i" / "results.json").read_text())
    assert res["summary"]["psnr_median"] > 100 and res["targets"][0]["rebuilt"]  # exact on the trained model
    # the weights really were loaded: the first layer's gradient differs from the untrained model's
    code, _, _ = run_cli([*args, "--out", tmp_path / "u"], capsys)
    assert json.loads((tmp_path / "u" / "results.json").read_text())["targets"][0]["psnr"] > 100
    trained = fedleak.models.build(spec, fedleak.data.load("digits").spec, weights=weights)
    fresh = fedleak.models.build(spec, fedleak.data.load("digits").spec)
    assert not torch.equal(trained[1].weight, fresh[1].weight)

    for bad, words in (
        ([*args[:4], f"{tmp_path / 'mine.py'}:nothere", *args[5:]], "no factory 'nothere'"),
        ([*args[:4], "mlp", *args[5:], "--weights", weights], "does not fit this model"),
        ([*args[:4], f"{tmp_path / 'nofile.py'}:build", *args[5:]], "does not exist"),
    ):
        code, _, err = run_cli([*bad, "--out", tmp_path / "bad"], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and words in err, err
        assert not (tmp_path / "bad" / "results.json").exists()


def test_any_module_works_in_python_without_registration():
    class Mine(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(64, 10)

        def forward(self, x):  # noqa: ANN001, ANN201
            return self.fc(x.flatten(1))

    data = fedleak.data.load("digits")
    update = fedleak.fl.client_update(Mine(), data.subset([7]))
    assert update.model.startswith("module:Mine")
    rec = fedleak.attacks.invert(update, attack="analytic")
    assert float(fedleak.metrics.psnr(rec.pixels, data.pixels([7]))[0]) > 100
    lenet_like = fedleak.fl.client_update(Mine(), data.subset([7, 8]))
    assert fedleak.attacks.inversion.why_not("spear", lenet_like) is not None  # no ReLU after its first layer


def test_auto_picks_the_attacks_that_fit_what_the_server_received():
    from fedleak.attacks.inversion import auto_attacks

    data = fedleak.data.load("digits")
    tanh = fedleak.models.build("mlp", data.spec, seed=0)
    relu = fedleak.models.build("mlp:64,act=relu", data.spec, seed=0)
    one = fedleak.fl.client_update(tanh, data.subset([3]))
    batch = fedleak.fl.client_update(relu, data.subset([3, 4, 5]))
    delta = fedleak.fl.client_update(tanh, data.subset([3, 4]), local_steps=2, batch_size=1, lr=0.1)
    assert auto_attacks(one) == ["analytic", "idlg"]  # one record, linear first layer: exact, then a match
    assert auto_attacks(batch) == ["spear", "idlg"]  # a batch through ReLU: spear, not analytic (a mixture)
    assert auto_attacks(delta) == ["fedavg"]  # a FedAvg delta: only the replay fits
    assert auto_attacks(fedleak.fl.ThreatModel.from_grants("none").view(delta)) == []  # no lr granted: nothing


def test_train_and_mia_start_from_weights(tmp_path, capsys):
    """--weights is where fedleak train's global model and fedleak mia's target start. With a learning rate too
    small to move them (1e-4, one round / one epoch), the accuracy is the loaded model's (>= 0.8 here after 5
    rounds) where the seeded initialisation stays near chance (10 classes): the file really was the start."""
    base = ["--dataset", "digits", "--model", "mlp", "--seed", "0"]
    fed = ["--clients", "2", "--batch-size", "32"]
    code, _, err = run_cli(["train", *base, *fed, "--rounds", "5", "--out", tmp_path / "t"], capsys)
    assert code == 0, err
    trained = json.loads((tmp_path / "t" / "metrics.json").read_text())["rounds"][-1]["test_accuracy"]
    assert trained >= 0.8
    weights = tmp_path / "t" / "model.safetensors"
    still = ["--rounds", "1", "--lr", "1e-4"]
    code, _, err = run_cli(["train", *base, *fed, *still, "--weights", weights, "--out", tmp_path / "w"], capsys)
    assert code == 0, err
    metrics = json.loads((tmp_path / "w" / "metrics.json").read_text())
    assert metrics["weights"] == str(weights)
    assert abs(metrics["rounds"][0]["test_accuracy"] - trained) <= 0.02
    code, _, err = run_cli(["train", *base, *fed, *still, "--out", tmp_path / "f"], capsys)
    assert json.loads((tmp_path / "f" / "metrics.json").read_text())["rounds"][0]["test_accuracy"] < 0.3

    mia = ["mia", *base, "--attack", "loss", "--members", "100", "--epochs", "1", "--lr", "1e-4"]
    code, _, err = run_cli([*mia, "--weights", weights, "--out", tmp_path / "m"], capsys)
    assert code == 0, err
    res = json.loads((tmp_path / "m" / "results.json").read_text())
    assert res["config"]["weights"] == str(weights) and res["target"]["test_accuracy"] >= 0.8
    code, _, err = run_cli([*mia, "--out", tmp_path / "n"], capsys)
    assert json.loads((tmp_path / "n" / "results.json").read_text())["target"]["test_accuracy"] < 0.3
