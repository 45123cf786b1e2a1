import json

import pytest
from conftest import run_cli

from fedleak.audit import stages
from fedleak.audit.config import load_config, parse_config
from fedleak.audit.pipeline import run_audit
from fedleak.errors import FedleakInputError
from fedleak.results import AuditResults

# A FedAvg federation of 3 clients (32 records each, 2 local steps of batch 16): the sent updates are deltas, so
# the audit attacks them with the FedAvg replay ("auto"); a labelled probe (one record's gradient, which no
# client sends) is attacked analytically. Membership runs on its own federation (breast-cancer).
SMALL = {
    "seed": 0,
    "defenses": ["prune:0.99"],
    "federation": {"dataset": "digits", "model": "mlp", "clients": 3, "rounds": 2, "samples": 120, "batch_size": 16},
    "inversion": {
        "attacks": ["auto"],
        "rounds": [1],
        "clients": [0, 1],
        "probe_batch_size": 1,
        "probe_attacks": ["analytic"],
        "probe_defended": True,
        "iterations": 3,
    },
    "membership": {"attacks": ["loss", "lira"], "references": 2, "dataset": "breast-cancer", "rounds": 3},
}


def numbers(results: AuditResults) -> list:
    """Every measured number of an audit, without wall-clock times."""
    out = []
    for s in results.scenarios:
        out += [r.test_accuracy for r in s.training.rounds]
        for case in s.inversion:
            out += [(t.psnr, t.ssim, t.recovered_label) for t in case.targets]
        for entry in s.membership:
            out += [(a, v.auc, v.tpr_at_fpr["0.01"]) for a, v in sorted(entry.attacks.items())]
    return out


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("audit") / "clean"
    return out, run_audit(parse_config(SMALL), out, echo=lambda s: None)


def test_audit_attacks_what_the_server_received_and_labels_the_probe(clean_run):
    out, results = clean_run
    undefended, pruned = results.scenarios
    assert undefended.defense == "none" and pruned.defense == "prune:0.99"
    sent = [e for e in undefended.inversion if e.update == "sent"]
    probe = [e for e in undefended.inversion if e.update == "probe"]
    # the clients send FedAvg deltas: the attack that fits them is the FedAvg replay, on every record they hold
    assert [e.attack for e in sent] == ["fedavg"] and sent[0].realism.received == "delta"
    assert sent[0].realism.local_steps == 2 and sent[0].realism.beyond_server == []
    assert len(sent[0].targets) == 64 and {t.client for t in sent[0].targets} == {0, 1}
    # the probe: one record's gradient the audit computed; analytic is exact on it, and it says what it is
    assert probe[0].attack == "analytic" and all(t.psnr > 100 and t.rebuilt for t in probe[0].targets)
    assert probe[0].realism.beyond_server and "computed by the audit" in probe[0].realism.beyond_server[0]
    assert [e.update for e in pruned.inversion] == ["sent", "probe"]  # probe_defended: the probe under the defense
    assert all(not t.rebuilt for e in pruned.inversion for t in e.targets)  # pruning 99% destroys even the probe
    # the headline counts only sent updates: the probe's 2 exact images are their own sentence
    sent_rebuilt = sum(t.rebuilt for t in sent[0].targets)
    assert f"rebuilt {sent_rebuilt} of 64 client images from the updates the clients of" in results.verdict[0]
    assert "Probe, not what the clients of the digits federation send" in results.verdict[0]
    assert (out / sent[0].image).stat().st_size > 1000
    for name in ("results.json", "config.toml", "report.html"):
        assert (out / name).exists()
    assert (out / "report.html").read_text().count("data:image/png;base64") >= 2


def test_every_figure_names_its_federation(clean_run):
    out, results = clean_run
    written = json.loads((out / "results.json").read_text())
    assert AuditResults.from_dict(written) == results  # results.json is the schema, round-tripped
    assert [f.dataset for f in results.setup.federations] == ["digits", "breast-cancer"]
    for s in results.scenarios:
        assert s.training.federation.dataset == "digits"
        assert s.membership_training.federation.dataset == "breast-cancer"
        for part in s.membership:  # membership figures and their accuracy are the breast-cancer model's
            assert part.federation.dataset == "breast-cancer"
            assert part.federation.test_accuracy == pytest.approx(s.membership_training.final_test_accuracy, abs=1e-6)
            for roc in part.attacks.values():
                assert roc.counts["members"] > 0 and len(roc.auc_ci) == 2 and roc.auc_ci[0] <= roc.auc <= roc.auc_ci[1]
                n = roc.counts["non_members"]
                assert (roc.tpr_at_fpr["0.001"] is None) == (n < 1000)  # not resolvable below 1 / non-members
        for e in s.inversion:
            assert e.federation == "the digits federation"
            for t in e.targets:  # the one rule: nothing within 3 dB of a blank image counts as rebuilt
                assert not (t.rebuilt and t.psnr < t.baseline_psnr + 3)
    assert "on the breast-cancer federation, the strongest membership attack" in results.verdict[0]
    assert "on the digits federation" in results.verdict[0] and "on the breast-cancer federation" in results.verdict[1]


def test_resume_after_interruption_gives_the_same_numbers(clean_run, tmp_path, monkeypatch):
    _, clean = clean_run
    out = tmp_path / "resumed"
    real = stages.membership_stage

    def dies_in_second_scenario(run, config, fs, slug, trained, echo):
        if slug != "none":
            raise KeyboardInterrupt  # killed mid-way, after the first scenario's stages were written
        return real(run, config, fs, slug, trained, echo)

    monkeypatch.setattr(stages, "membership_stage", dies_in_second_scenario)
    with pytest.raises(KeyboardInterrupt):
        run_audit(parse_config(SMALL), out, echo=lambda s: None)
    assert not (out / "results.json").exists() and (out / "stages" / "train-main-none.json").exists()
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
        "inversion": {
            "attacks": ["analytic"],
            "rounds": [2],
            "clients": [1],
            "probe_batch_size": 1,
            "probe_attacks": ["analytic"],
        },
        "membership": {"attacks": ["loss"], "targets": ["global"]},
    }
    local = run_audit(parse_config(cfg), tmp_path / "local", echo=lambda s: None, report=False)
    flower = run_audit(parse_config({**cfg, "engine": "flower"}), tmp_path / "flower", echo=lambda s: None)
    acc = [r.training.final_test_accuracy for r in (local.scenarios[0], flower.scenarios[0])]
    assert abs(acc[0] - acc[1]) < 0.01
    entries = {e.update: e for e in flower.scenarios[0].inversion}
    assert entries["sent"].status == "not applicable" and "delta" in entries["sent"].note  # analytic reads gradients
    assert entries["probe"].summary.psnr_median > 100
    assert flower.setup.engine == "flower" and (tmp_path / "flower" / "report.html").exists()


def test_audit_text_case_is_recovered_and_reported(tmp_path):
    cfg = {
        "federation": {"dataset": "digits", "model": "mlp", "clients": 2, "rounds": 1},
        "inversion": {"enabled": False},
        "membership": {"enabled": False},
        "text": {"enabled": True, "num_records": 2},
    }
    results = run_audit(parse_config(cfg), tmp_path / "run", echo=lambda s: None).to_dict()
    case = results["scenarios"][0]["text"][0]
    assert case["summary"]["token_accuracy_median"] >= 0.9
    assert all(t["recovered_text"] == t["text"] for t in case["targets"])
    html = (tmp_path / "run" / "report.html").read_text()
    assert case["targets"][0]["text"].split()[1] in html  # the true record is shown beside the recovered one


def test_audit_dp_section_carries_the_three_figures_never_confused(tmp_path):
    cfg = {
        "federation": {"dataset": "digits", "model": "mlp", "clients": 2, "rounds": 1},
        "inversion": {"enabled": False},
        "membership": {"enabled": False},
        "audit_dp": {
            "enabled": True,
            "defense": "client-dp:epsilon=4,delta=1e-5",
            "canaries": "client",
            "num_canaries": 100,
            "rounds": 5,
        },
    }
    results = run_audit(parse_config(cfg), tmp_path / "run", echo=lambda s: None)
    d = results.dp_audit
    own = json.loads((tmp_path / "run" / "audit_dp" / "results.json").read_text())["privacy"]
    assert (d.epsilon, d.epsilon_lower_bound, d.epsilon_estimate) == (
        own["epsilon"],
        own["epsilon_lower_bound"],
        own["epsilon_estimate"],
    )  # the audit shows the canary run's own figures
    assert 3.5 < d.epsilon <= 4.0 and 0 <= d.epsilon_lower_bound <= d.epsilon and d.canaries["total"] == 100
    assert results.verdict[-1].startswith("Auditing client-dp:epsilon=4,delta=1e-5 itself with 100 client canaries")
    html = (tmp_path / "run" / "report.html").read_text()
    assert "Auditing the privacy guarantee" in html and "an estimate, not a bound" in html
