import json
import subprocess
import sys

import pytest
from conftest import run_cli


def test_train_writes_metrics_and_weights_and_reaches_accuracy(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, _ = run_cli(
        [
            "train",
            "--dataset",
            "digits",
            "--model",
            "mlp",
            "--clients",
            "10",
            "--rounds",
            "20",
            "--seed",
            "0",
            "--out",
            out,
        ],
        capsys,
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert [r["round"] for r in metrics["rounds"]] == list(range(1, 21))
    assert metrics["rounds"][-1]["test_accuracy"] >= 0.90
    assert (out / "model.safetensors").stat().st_size > 0
    assert "round  20" in stdout


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--dataset", "nosuch:thing"], "unknown dataset"),
        (["--dataset", "imagefolder:/nonexistent.tar.gz"], "does not exist"),
        (["--dataset", "digits", "--model", "nosuchmodel"], "unknown model"),
        (["--dataset", "digits", "--partition", "dirichlet:x"], "dirichlet:0.5"),
        (["--dataset", "digits", "--fraction", "2"], "--fraction"),
        (["--dataset", "digits", "--bogus", "1"], "No such option"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_output(tmp_path, capsys, args, needle):
    out = tmp_path / "bad"
    code, _, err = run_cli(["train", *args, "--rounds", "1", "--out", out], capsys)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in err
    assert not out.exists()


def test_console_script_bad_input_has_no_traceback(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedleak.cli",
            "train",
            "--dataset",
            "nosuch:thing",
            "--out",
            str(tmp_path / "x"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_cifar_convnet_learns_from_the_shared_tarball(cifar_spec, tmp_path, capsys):
    code, _, _ = run_cli(
        [
            "train",
            "--dataset",
            cifar_spec,
            "--model",
            "convnet:8",
            "--clients",
            "4",
            "--rounds",
            "3",
            "--samples",
            "3000",
            "--lr",
            "0.05",
            "--seed",
            "0",
            "--out",
            tmp_path / "c",
        ],
        capsys,
    )
    assert code == 0
    acc = json.loads((tmp_path / "c" / "metrics.json").read_text())["rounds"][-1]["test_accuracy"]
    assert acc > 0.2
