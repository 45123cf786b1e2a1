import json

import pytest
from conftest import run_cli

from fedleak.audit import stages
from fedleak.audit.config import load_config, parse_config
from fedleak.audit.pipeline import run_audit
from fedleak.errors import FedleakInputError

SMALL = {
    "seed": 0,
    "defenses": ["prune:0.99"],
    "federation": {"dataset": "digits", "model": "mlp", "clients": 3, "rounds": 2},
    "inversion": {"attacks": ["analytic"], "rounds": [1], "clients": [0, 1], "probe_batch_size": 1},
    "membership": {"attacks": ["loss", "lira"], "references": 2},
}


def numbers(results: dict) -> list:
    """Every measured number of an audit, without wall-clock times."""
    out = []
    for s in results["scenarios"]:
        out += [r["test_accuracy"] for r in s["training"]["rounds"]]
        for case in s.get("inversion", []):
            out += [(t["psnr"], t["ssim"], t["recovered_label"]) for t in case["targets"]]
        for entry in s.get("membership", []):
            out += [(a, v["auc"], v["tpr_at_fpr"]["0.01"]) for a, v in sorted(entry["attacks"].items())]
    return out


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("audit") / "clean"
    return out, run_audit(parse_config(SMALL), out, echo=lambda s: None)


def test_audit_measures_leakage_and_the_defense_that_stops_it(clean_run):
    out, results = clean_run
    undefended, pruned = results["scenarios"]
    assert undefended["defense"] == "none" and pruned["defense"] == "prune:0.99"
    # the analytic attack on an undefended single-record update is exact; pruning 99% of it destroys that
    assert all(t["psnr"] > 100 for t in undefended["inversion"][0]["targets"])
    assert all(t["psnr"] < 20 for t in pruned["inversion"][0]["targets"])
    assert {e["target"] for e in undefended["membership"]} == {"global", "client:0"}
    assert (out / undefended["inversion"][0]["image"]).stat().st_size > 1000
    for name in ("results.json", "config.toml", "report.html"):
        assert (out / name).exists()
    assert results["verdict"] and "2 of 2" in results["verdict"][0]
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64") >= 2


def test_resume_after_interruption_gives_the_same_numbers(clean_run, tmp_path, monkeypatch):
    _, clean = clean_run
    out = tmp_path / "resumed"
    real = stages.membership_stage
    calls = {"n": 0}

    def dies_in_second_scenario(run, config, defense, trained, echo):
        calls["n"] += 1
        if defense != "none":
            raise KeyboardInterrupt  # killed mid-way, after the first scenario's stages were written
        return real(run, config, defense, trained, echo)

    monkeypatch.setattr(stages, "membership_stage", dies_in_second_scenario)
    with pytest.raises(KeyboardInterrupt):
        run_audit(parse_config(SMALL), out, echo=lambda s: None)
    assert not (out / "results.json").exists() and (out / "stages" / "train-none.json").exists()
    monkeypatch.setattr(stages, "membership_stage", real)
    with pytest.raises(FedleakInputError, match="--resume"):
        run_audit(parse_config(SMALL), out, echo=lambda s: None)
    resumed = run_audit(parse_config(SMALL), out, resume=True, echo=lambda s: None)
    assert numbers(resumed) == numbers(clean)


def test_config_errors_name_the_key_and_the_nearest_valid_one(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[federation]\ndataset = "digits"\nclinets = 3\n')
    with pytest.raises(FedleakInputError, match="unknown key 'federation.clinets'; did you mean 'clients'"):
        load_config(bad)
    code, _, err = run_cli(["audit", bad, "--out", tmp_path / "run"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()
    bad.write_text("[inversion]\nrounds = [9]\n")
    code, _, err = run_cli(["audit", bad, "--out", tmp_path / "run"], capsys)
    assert code == 2 and "rounds run from 1" in err


def test_resume_refuses_a_different_config(clean_run, tmp_path):
    out, _ = clean_run
    other = json.loads(json.dumps(SMALL))
    other["seed"] = 1
    with pytest.raises(FedleakInputError, match="different config"):
        run_audit(parse_config(other), out, resume=True, echo=lambda s: None)


def test_flower_engine_audit_matches_the_local_engine(tmp_path, monkeypatch):
    pytest.importorskip("flwr")
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "flwr"))
    cfg = {
        "seed": 0,
        "federation": {"dataset": "digits", "model": "mlp", "clients": 3, "rounds": 2},
        "inversion": {"attacks": ["analytic"], "rounds": [2], "clients": [1], "probe_batch_size": 1},
        "membership": {"attacks": ["loss"], "targets": ["global"]},
    }
    local = run_audit(parse_config(cfg), tmp_path / "local", echo=lambda s: None, report=False)
    flower = run_audit(parse_config({**cfg, "engine": "flower"}), tmp_path / "flower", echo=lambda s: None)
    acc = [r["training"]["final_test_accuracy"] for r in (local["scenarios"][0], flower["scenarios"][0])]
    assert abs(acc[0] - acc[1]) < 0.01
    assert flower["scenarios"][0]["inversion"][0]["summary"]["psnr_median"] > 100
    assert flower["setup"]["engine"] == "flower" and (tmp_path / "flower" / "report.html").exists()


def test_audit_text_case_is_recovered_and_reported(tmp_path):
    cfg = {
        "federation": {"dataset": "digits", "model": "mlp", "clients": 2, "rounds": 1},
        "inversion": {"enabled": False},
        "membership": {"enabled": False},
        "text": {"enabled": True, "num_records": 2},
    }
    results = run_audit(parse_config(cfg), tmp_path / "run", echo=lambda s: None)
    case = results["scenarios"][0]["text"][0]
    assert case["summary"]["token_accuracy_median"] >= 0.9
    assert all(t["recovered_text"] == t["text"] for t in case["targets"])
    html = (tmp_path / "run" / "report.html").read_text()
    assert case["targets"][0]["text"].split()[1] in html  # the true record is shown beside the recovered one
