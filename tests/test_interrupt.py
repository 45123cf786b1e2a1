"""Ctrl-C and SIGTERM are interruptions, never successes: exit 130 / 143, one line on stderr saying how to go
on, and no results.json of the unfinished run (a real process, a real signal)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def _as_from_a_terminal() -> None:
    """The child takes SIGINT as a terminal's Ctrl-C does: a shell that starts a test run in the background
    (``make test &``) hands its children SIGINT ignored, and Python then installs no KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


CONFIG = """
seed = 0
[federation]
dataset = "digits"
model = "mlp"
clients = 2
rounds = 1
[inversion]
attacks = ["auto"]
iterations = 100000
[membership]
enabled = false
"""


@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "SIGTERM")])
def test_a_signal_mid_run_exits_with_its_code_one_line_and_no_results(tmp_path: Path, sig, code, word):
    cfg = tmp_path / "audit.toml"
    cfg.write_text(CONFIG)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FLWR_TELEMETRY_ENABLED": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedleak.cli", "audit", str(cfg), "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=_as_from_a_terminal,
    )
    deadline = time.monotonic() + 120
    for line in proc.stdout:  # wait until training is done and the (long) inversion stage has begun
        if "stage train-main-none done" in line or time.monotonic() > deadline:
            break
    time.sleep(1.0)
    proc.send_signal(sig)
    rest, err = proc.communicate(timeout=60)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert proc.returncode == code, err
    assert len(lines) == 1 and word in lines[0] and "--resume" in lines[0], lines
    assert "Traceback" not in err
    assert (out / "stages" / "train-main-none.json").exists()  # what finished is kept for --resume
    assert not (out / "results.json").exists() and not (out / "report.html").exists()


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_inversion_writes_nothing(tmp_path: Path, sig, code):
    """A command without --resume: the same codes, one line saying nothing was written, and no results file."""
    out = tmp_path / "inv"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FLWR_TELEMETRY_ENABLED": "0"}
    args = ["invert", "--dataset", "digits", "--model", "mlp", "--attack", "dlg", "--iterations", "100000"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedleak.cli", *args, "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=_as_from_a_terminal,
    )
    deadline = time.monotonic() + 120
    for line in proc.stdout:  # the attack loop has begun (100,000 steps: minutes away from its end)
        if line.startswith("attacking") or time.monotonic() > deadline:
            break
    time.sleep(1.0)
    proc.send_signal(sig)
    rest, err = proc.communicate(timeout=60)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert proc.returncode == code, err
    assert len(lines) == 1 and "no results were written" in lines[0], lines
    assert not (out / "results.json").exists() and not (out / "reconstructions.png").exists()
