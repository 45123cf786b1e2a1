"""The sweep: grids expand into one run per point (undefended first), every point is checked before anything
runs, and the folder holds the table, the plot and a results.json the report can read."""

from __future__ import annotations

import json

import pytest

from fedleak.audit import sweep as sweep_mod
from fedleak.errors import FedleakInputError


def _fake_experiments(monkeypatch, calls):
    def run_inversion(
        *, dataset, model, attack, defenses, seed, out, indices=None, iterations=None, echo=print, **extra
    ):
        calls.append(("invert", tuple(defenses)))
        frac = float(defenses[0].split(":")[1]) if defenses and defenses[0].startswith("prune") else 0.0
        return {
            "kind": "inversion",
            "summary": {"psnr_median": 40 * (1 - frac), "ssim_mean": 1 - frac, "label_accuracy": 1.0},
        }

    def run_mia(*, dataset, model, attack, defense, seed, out, members=None, echo=print, **extra):
        calls.append(("mia", tuple(defense)))
        eps = float(defense[0].split("=")[1].split(",")[0]) if defense and "epsilon" in defense[0] else None
        return {
            "kind": "membership",
            "auc": 0.5 + (0.1 if eps is None else eps / 100),
            "tpr_at_fpr": {"0.001": 0.01, "0.01": 0.05, "0.1": 0.2},
            "target": {"train_accuracy": 1.0, "test_accuracy": 0.9 if eps is None else 0.5 + eps / 20},
            "privacy": {"epsilon": eps, "epsilon_lower_bound": 0.1, "delta": 1e-5},
        }

    def run_training(*, dataset, model, defenses, out, clients=10, rounds=10, echo=print, **extra):
        calls.append(("train", tuple(defenses)))
        acc = 0.95 - (0.3 if defenses and "epsilon=1" in defenses[0] else 0.0)
        return {"kind": "train", "rounds": [{"round": rounds, "test_accuracy": acc}], "privacy": {}}

    for name, fake in (("run_inversion", run_inversion), ("run_mia", run_mia), ("run_training", run_training)):
        monkeypatch.setattr(sweep_mod, name, fake)  # the sweep calls the experiments' own functions directly


def test_sweep_grid_table_plot_and_resume(tmp_path, monkeypatch):
    calls: list = []
    _fake_experiments(monkeypatch, calls)
    grid = {"dataset": "digits", "model": "mlp", "invert": "idlg", "mia": "loss", "out": tmp_path}
    grid |= {"defenses": ["prune:0.5,0.99", "dp-sgd:epsilon=1,8"], "echo": lambda s: None}
    res = sweep_mod.run_sweep(**grid)
    specs = [r["defense"] for r in res["rows"]]
    assert specs == ["none", "prune:0.5", "prune:0.99", "dp-sgd:epsilon=1", "dp-sgd:epsilon=8"]
    assert [r["family"] for r in res["rows"]] == ["none", "prune", "prune", "dp-sgd", "dp-sgd"]
    assert ("mia", ("dp-sgd:epsilon=8",)) in calls and ("invert", ()) in calls  # defense reached each run
    row = {r["defense"]: r for r in res["rows"]}
    assert row["prune:0.99"]["psnr_median"] == pytest.approx(0.4) and row["dp-sgd:epsilon=8"]["epsilon"] == 8
    assert row["dp-sgd:epsilon=1"]["mia_target_accuracy"] == pytest.approx(0.55)
    assert row["dp-sgd:epsilon=1"]["utility"] == pytest.approx(0.65) and row["none"]["utility"] == 0.95
    # the membership experiment trains centrally: it runs for dp-sgd and none, not for pruning
    assert ("mia", ("prune:0.5",)) not in calls and row["prune:0.5"].get("auc") is None
    assert "membership not measured" in row["prune:0.5"]["note"]  # said, not silently dropped
    assert ("train", ("prune:0.5",)) in calls
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["kind"] == "sweep" and on_disk["rows"] == json.loads((tmp_path / "sweep.json").read_text())["rows"]
    assert (tmp_path / "privacy_utility.png").read_bytes()[:4] == b"\x89PNG"
    table = (tmp_path / "sweep.md").read_text().splitlines()
    assert len(table) == 2 + 5 and "psnr_median" in table[0] and "tpr_at_fpr_0.01" in table[0]
    assert len((tmp_path / "sweep.csv").read_text().strip().splitlines()) == 6
    n = len(calls)
    sweep_mod.run_sweep(**grid, resume=True)
    assert len(calls) == n  # every point reused


def test_sweep_checks_every_point_before_running(tmp_path, monkeypatch):
    calls: list = []
    _fake_experiments(monkeypatch, calls)
    with pytest.raises(FedleakInputError):
        sweep_mod.run_sweep(dataset="digits", model="mlp", defenses=["prune:0.5,1.5"], mia="loss", out=tmp_path)
    with pytest.raises(FedleakInputError):
        sweep_mod.run_sweep(dataset="digits", model="mlp", defenses=["prune:0.5"], out=tmp_path)
    assert calls == [] and not (tmp_path / "results.json").exists()


def test_slug_is_a_safe_unique_folder_name():
    names = {sweep_mod.slug(s) for s in ["dp-sgd:epsilon=1,delta=1e-5", "dp-sgd:epsilon=8,delta=1e-5", "none"]}
    assert len(names) == 3 and all("/" not in n and ":" not in n for n in names)
