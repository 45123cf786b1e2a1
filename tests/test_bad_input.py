"""Every bad input gets exit 2, one line on stderr (what is wrong and what to do), no traceback, and no results
file. One row per case: the kinds of issue #14 and the invalid values found by going through the options and
config keys one by one. Each row builds its input in a fresh folder."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (PIL refuses it as a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def make(tmp: Path, what: str) -> str:
    """Build a bad input file in ``tmp``; returns its path as a string."""
    if what == "bomb":
        for c in ("a", "b"):
            (tmp / "imgs" / c).mkdir(parents=True)
        (tmp / "imgs" / "a" / "0.png").write_bytes(_png_claiming(30000, 30000))
        (tmp / "imgs" / "b" / "0.png").write_bytes(_png_claiming(30000, 30000))
        return str(tmp / "imgs")
    if what.startswith("npz-"):
        arrays = {
            "npz-empty": {"x": np.zeros((0, 4), np.float32), "y": np.zeros(0, np.int64)},
            "npz-0d": {"x": np.array(3.0), "y": np.array(1)},
            "npz-str": {"x": np.array([["a", "b"], ["c", "d"]]), "y": np.array([0, 1])},
            "npz-nan": {"x": np.array([[np.nan, 1.0], [2.0, 3.0]] * 10), "y": np.array([0, 1] * 10)},
        }[what]
        np.savez(tmp / "d.npz", **arrays)
        return str(tmp / "d.npz")
    if what == "csv-blank":
        (tmp / "d.csv").write_text("a,b,label\n\n\n \n")
        return str(tmp / "d.csv")
    if what == "csv-float-label":
        rng = np.random.default_rng(0)
        rows = "\n".join(",".join(f"{v:.4f}" for v in rng.random(3)) for _ in range(720))
        (tmp / "d.csv").write_text("a,b,c\n" + rows + "\n")
        return str(tmp / "d.csv")
    if what == "csv-inf":
        (tmp / "d.csv").write_text("a,b,label\n" + "\n".join(f"{i},inf,{i % 2}" for i in range(20)) + "\n")
        return str(tmp / "d.csv")
    if what == "config-folder":
        (tmp / "cfg").mkdir()
        return str(tmp / "cfg")
    if what == "file":
        (tmp / "afile").write_text("x")
        return str(tmp / "afile")
    if what == "weights-shape":  # the parameters of mlp:7 on digits: the same names, other shapes
        from fedleak.data import load
        from fedleak.models import build, save_weights

        save_weights(build("mlp:7", load("digits").spec), tmp / "w.safetensors")
        return str(tmp / "w.safetensors")
    if what.startswith("cfg:"):
        (tmp / "c.toml").write_text(what[4:].replace("|", "\n"))
        return str(tmp / "c.toml")
    raise AssertionError(what)


INV = ["invert", "--dataset", "digits", "--model", "mlp", "--attack", "analytic"]
MIA = ["mia", "--dataset", "digits", "--model", "mlp:16", "--attack", "loss", "--members", "50", "--epochs", "1"]
TRAIN = ["train", "--dataset", "digits", "--model", "mlp", "--clients", "2", "--rounds", "1"]
SWEEP = ["sweep", "--dataset", "digits", "--model", "mlp", "--invert", "analytic", "--defense"]

# (id, argv with {X} for a made input and {OUT} for the run folder, input kind, words the line must hold)
CASES = [
    ("config is a folder", ["audit", "{X}", "--out", "{OUT}"], "config-folder", "is a folder"),
    ("image bomb", ["train", "--dataset", "imagefolder:{X}", "--out", "{OUT}"], "bomb", "safety limit"),
    ("npz empty", [*TRAIN[:1], "--dataset", "npz:{X}", "--out", "{OUT}"], "npz-empty", "no records"),
    ("npz 0-d x", [*TRAIN[:1], "--dataset", "npz:{X}", "--out", "{OUT}"], "npz-0d", "0-d"),
    ("npz string x", [*TRAIN[:1], "--dataset", "npz:{X}", "--out", "{OUT}"], "npz-str", "must be numbers"),
    ("npz NaN x", [*TRAIN[:1], "--dataset", "npz:{X}", "--out", "{OUT}"], "npz-nan", "NaN"),
    ("csv header and blanks", [*TRAIN[:1], "--dataset", "csv:{X}", "--out", "{OUT}"], "csv-blank", "no data rows"),
    ("csv float label", [*TRAIN[:1], "--dataset", "csv:{X}", "--out", "{OUT}"], "csv-float-label", "?label=NAME"),
    ("csv inf feature", [*TRAIN[:1], "--dataset", "csv:{X}", "--out", "{OUT}"], "csv-inf", "infinite"),
    ("out under /proc", [*INV, "--indices", "0", "--out", "/proc/fedleak/run"], None, "cannot write"),
    ("out under a file", [*INV, "--indices", "0", "--out", "{X}/run"], "file", "is a file"),
    ("out is a file", [*INV, "--indices", "0", "--out", "{X}"], "file", "is a file"),
    ("dp-sgd noise nan", [*MIA, "--defense", "dp-sgd:noise=nan", "--out", "{OUT}"], None, "finite"),
    ("dp-sgd epsilon nan", [*MIA, "--defense", "dp-sgd:epsilon=nan", "--out", "{OUT}"], None, "finite"),
    ("dp-sgd epsilon inf", [*MIA, "--defense", "dp-sgd:epsilon=inf", "--out", "{OUT}"], None, "finite"),
    ("dp-sgd delta 2", [*MIA, "--defense", "dp-sgd:epsilon=1,delta=2", "--out", "{OUT}"], None, "below 1"),
    ("noise nan", [*INV, "--indices", "0", "--defense", "noise:nan", "--out", "{OUT}"], None, "finite"),
    ("noise inf", [*INV, "--indices", "0", "--defense", "noise:inf", "--out", "{OUT}"], None, "finite"),
    ("clip nan", [*INV, "--indices", "0", "--defense", "clip:nan", "--out", "{OUT}"], None, "finite"),
    ("prune nan", [*INV, "--indices", "0", "--defense", "prune:nan", "--out", "{OUT}"], None, "finite"),
    ("num-images 0", [*INV, "--num-images", "0", "--out", "{OUT}"], None, "--num-images"),
    ("iterations 1e23", [*INV, "--indices", "0", "--iterations", "1e23", "--out", "{OUT}"], None, "--iterations"),
    ("iterations huge", [*INV, "--indices", "0", "--iterations", "10000000000", "--out", "{OUT}"], None, "iterations"),
    ("lr nan", [*TRAIN, "--lr", "nan", "--out", "{OUT}"], None, "finite"),
    ("fraction inf", [*TRAIN, "--fraction=inf", "--out", "{OUT}"], None, "finite"),
    ("local-lr -1", [*INV, "--indices", "0", "--local-lr", "-1", "--out", "{OUT}"], None, "local-lr"),
    ("batch-size 0", [*INV, "--indices", "0", "--batch-size", "0", "--out", "{OUT}"], None, "batch-size"),
    ("restarts 0", [*INV, "--indices", "0", "--restarts", "0", "--out", "{OUT}"], None, "restarts"),
    ("indices out of range", [*INV, "--indices", "99999", "--out", "{OUT}"], None, "out of range"),
    ("unknown attack", [*INV[:5], "--attack", "nosuch", "--out", "{OUT}"], None, "nosuch"),
    ("unknown grant", [*INV, "--indices", "0", "--grant", "nope", "--out", "{OUT}"], None, "grant"),
    ("bad device", [*INV, "--indices", "0", "--device", "tpu", "--out", "{OUT}"], None, "tpu"),
    ("members 0", [*MIA[:8], "--members", "0", "--out", "{OUT}"], None, "--members"),
    ("train clients 0", [*TRAIN[:5], "--clients", "0", "--out", "{OUT}"], None, "clients"),
    ("bad partition", [*TRAIN, "--partition", "dirichlet:x", "--out", "{OUT}"], None, "partition"),
    ("cfg unknown key", ["audit", "{X}", "--out", "{OUT}"], "cfg:[federation]|clinets = 3", "did you mean 'clients'"),
    ("cfg lr nan", ["audit", "{X}", "--out", "{OUT}"], "cfg:[federation]|lr = nan", "federation.lr"),
    ("cfg lr inf", ["audit", "{X}", "--out", "{OUT}"], "cfg:[federation]|lr = inf", "federation.lr"),
    ("cfg device", ["audit", "{X}", "--out", "{OUT}"], 'cfg:device = "tpu"', "tpu"),
    (
        "cfg audit_dp flower with gradient canaries",
        ["audit", "{X}", "--out", "{OUT}"],
        'cfg:[audit_dp]|enabled = true|flower = "server"|canaries = "gradient"',
        "canaries = 'client'",
    ),
    ("cfg partition", ["audit", "{X}", "--out", "{OUT}"], 'cfg:[federation]|partition = "shards:x"', "partition"),
    ("cfg samples", ["audit", "{X}", "--out", "{OUT}"], "cfg:[federation]|samples = 999999", "samples"),
    ("cfg clients", ["audit", "{X}", "--out", "{OUT}"], "cfg:[federation]|clients = 100000", "clients"),
    ("cfg secagg > clients", ["audit", "{X}", "--out", "{OUT}"], 'cfg:defenses = ["secagg:50"]', "secagg"),
    ("cfg defense nan", ["audit", "{X}", "--out", "{OUT}"], 'cfg:defenses = ["noise:nan"]', "finite"),
    (
        "cfg text dataset",
        ["audit", "{X}", "--out", "{OUT}"],
        'cfg:[text]|enabled = true|dataset = "digits"',
        "text dataset",
    ),
    ("cfg text attack", ["audit", "{X}", "--out", "{OUT}"], 'cfg:[text]|enabled = true|attack = "nosuch"', "nosuch"),
    ("cfg probe batch", ["audit", "{X}", "--out", "{OUT}"], "cfg:[inversion]|probe_batch_size = 100000", "probe"),
    ("cfg inversion attack", ["audit", "{X}", "--out", "{OUT}"], 'cfg:[inversion]|attacks = ["x"]', "'x'"),
    ("cfg iterations huge", ["audit", "{X}", "--out", "{OUT}"], "cfg:[inversion]|iterations = 100000000000", "iter"),
    ("cfg membership client", ["audit", "{X}", "--out", "{OUT}"], "cfg:[membership]|client = 50", "membership.client"),
    ("cfg not toml", ["audit", "{X}", "--out", "{OUT}"], "cfg:[federation|x", "not valid TOML"),
    ("report of a folder without results", ["report", "{OUT}"], None, "does not exist"),
    ("lr overflows to inf", [*TRAIN, "--lr", "1e999", "--out", "{OUT}"], None, "finite"),
    ("mia momentum 1", [*MIA, "--momentum", "1", "--out", "{OUT}"], None, "--momentum"),
    ("train rounds 0", [*TRAIN[:7], "--rounds", "0", "--out", "{OUT}"], None, "--rounds"),
    ("train secagg > clients", [*TRAIN, "--defense", "secagg:5", "--out", "{OUT}"], None, "secagg:2 or fewer"),
    ("sweep secagg > clients", [*SWEEP, "secagg:50", "--clients", "3", "--out", "{OUT}"], None, "secagg:3"),
    ("sweep samples < clients", [*SWEEP, "prune:0.5", "--samples", "5", "--out", "{OUT}"], None, "--clients"),
    ("sweep rounds 0", [*SWEEP, "prune:0.5", "--rounds", "0", "--out", "{OUT}"], None, "--rounds"),
    ("demo bad device", ["demo", "--device", "tpu", "--out", "{OUT}"], None, "tpu"),
    ("train weights wrong shape", [*TRAIN, "--weights", "{X}", "--out", "{OUT}"], "weights-shape", "does not fit"),
    ("mia weights wrong shape", [*MIA, "--weights", "{X}", "--out", "{OUT}"], "weights-shape", "does not fit"),
    (
        "text invert weights of another model",
        ["invert", "--modality", "text", "--dataset", "demo-records", "--model", "gpt", "--attack", "dager"]
        + ["--batch-size", "2", "--num-records", "2", "--weights", "{X}", "--out", "{OUT}"],
        "weights-shape",
        "does not fit",
    ),
    ("audit seed not a number", ["audit", "{X}", "--seed", "x", "--out", "{OUT}"], "cfg:seed = 0", "--seed"),
]


@pytest.mark.parametrize("name, argv, kind, words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, name, argv, kind, words):
    made = make(tmp_path, kind) if kind else ""
    out = tmp_path / "run"
    args = [a.replace("{X}", made).replace("{OUT}", str(out)) for a in argv]
    code, _, err = run_cli(args, capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, (code, err)
    assert len(lines) == 1 and "Traceback" not in err, err
    assert words.lower() in lines[0].lower(), lines[0]
    assert not (out / "results.json").exists() and not (out / "metrics.json").exists()
    assert not out.exists()  # everything is checked before the run folder is made
