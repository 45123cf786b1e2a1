"""fedleak.report: report.html from a run folder. Properties: self-contained (every picture embedded, nothing
outside), escaped, graceful on missing keys, no torch, a verdict from the numbers, a clear error for bad
input, and (where Chromium exists) it renders with every image decoded and no console error."""

from __future__ import annotations

import html as htmllib
import io
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

from fedleak.errors import FedleakInputError
from fedleak.report import build_report, render_report
from fedleak.report.measures import (
    InversionNumbers,
    MembershipNumbers,
    PrivacyNumbers,
    ScenarioNumbers,
    inversion_numbers,
    membership_numbers,
    scenario_numbers,
)
from fedleak.report.verdict import compose_verdict

EVIL = "<script>alert(1)</script>"
PNG_URI = "data:image/png;base64,"


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray((255 * np.clip(pixels, 0, 1)).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def inversion_png(n: int, seed: int) -> bytes:
    """Originals above reconstructions (what the audit writes, here without the PSNR captions)."""
    rng = np.random.default_rng(seed)
    originals = rng.random((n, 8, 8, 3))
    rebuilt = originals + rng.normal(0, 0.1, originals.shape)
    grid = np.concatenate([np.concatenate(list(originals), axis=1), np.concatenate(list(rebuilt), axis=1)], axis=0)
    return _png(np.kron(grid, np.ones((6, 6, 1))))


def roc_curve(strength: float) -> dict:
    fpr = [0.0, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.3, 0.6, 1.0]
    return {"fpr": fpr, "tpr": [min(1.0, f ** (1 / (1 + strength))) for f in fpr]}


def roc_png() -> bytes:
    return _png(np.tile(np.linspace(0, 1, 120)[:, None, None], (1, 160, 3)))


def roc_block(auc: float, tpr1: float, non_members: int = 500) -> dict:
    """A roc_report-shaped attack (at 500 non-members the 0.1% level is not resolvable)."""
    return {
        "auc": auc,
        "auc_ci": [auc - 0.03, auc + 0.03],
        "tpr_at_fpr": {"0.001": None, "0.01": tpr1, "0.1": 0.3},
        "tpr_at_fpr_ci": {"0.001": None, "0.01": [tpr1 / 2, tpr1 * 1.6], "0.1": [0.26, 0.34]},
        "counts": {"members": 500, "non_members": non_members},
        "balanced_accuracy": auc - 0.05,
        "curve": roc_curve(auc - 0.5),
    }


DIGITS = {
    "name": "the digits federation",
    "dataset": "digits",
    "model": "mlp",
    "clients": 5,
    "rounds": 10,
    "mode": "fedavg",
    "local_epochs": 5,
    "batch_size": 32,
    "lr": 0.1,
    "partition": "iid",
}
FACES = {
    "name": "the faces federation",
    "dataset": EVIL,
    "model": "lenet",
    "clients": 10,
    "rounds": 5,
    "mode": "fedavg",
    "local_epochs": 1,
    "batch_size": 8,
    "lr": 0.1,
    "partition": "iid",
}


def mia_entry(target: str, auc: float, tpr1: float, image: str | None, test_accuracy: float = 0.8) -> dict:
    entry = {
        "target": target,
        "description": f"{target} model",
        "federation": {**DIGITS, "test_accuracy": test_accuracy},
        "attacks": {"lira": roc_block(auc, tpr1), "loss": roc_block(auc - 0.08, tpr1 * 0.5)},
        "train_accuracy": 1.0,
    }
    if image:
        entry["image"] = image
    return entry


def realism(update: str = "sent", received: str = "delta", beyond: list[str] | None = None) -> dict:
    return {
        "update": update,
        "received": received,
        "records_per_update": 16 if update == "sent" else 1,
        "local_steps": 6 if received == "delta" else None,
        "local_epochs": 3 if received == "delta" else None,
        "local_batch_size": 8 if received == "delta" else None,
        "num_clients": 1,
        "granted": ["num_samples", "local_steps", "local_lr", "batch_size"],
        "model_mode": "train",
        "bn_prior": None,
        "beyond_server": beyond or [],
    }


def inversion_case(defense: str, psnrs: list[float], with_image: bool = True, update: str = "sent") -> dict:
    targets = [
        {
            "index": 12 + i,
            "client": 3,
            "label": i % 3,
            "recovered_label": i % 3 if p > 20 else (i + 1) % 3,
            "psnr": p,
            "ssim": min(1.0, p / 40),
            "mse": 10 ** (-p / 10),
            "baseline_psnr": 14.0,
            "rebuilt": p >= 24.0 and p / 40 >= 0.5,
            "seconds": 0.5,
        }
        for i, p in enumerate(psnrs)
    ]
    case = {
        "update": update,
        "attack": "fedavg" if update == "sent" else "idlg",
        "round": 1,
        "federation": "the faces federation",
        "clients": [3],
        "realism": realism(
            update,
            "delta" if update == "sent" else "gradient",
            None if update == "sent" else ["a FedSGD gradient of 1 record(s) computed by the audit"],
        ),
        "targets": targets,
        "summary": {
            "psnr_median": float(np.median(psnrs)),
            "psnr_mean": float(np.mean(psnrs)),
            "ssim_mean": float(np.mean([t["ssim"] for t in targets])),
            "baseline_psnr_median": 14.0,
            "label_accuracy": float(np.mean([t["label"] == t["recovered_label"] for t in targets])),
            "rebuilt": sum(t["rebuilt"] for t in targets),
            "total": len(psnrs),
            "seconds_total": 2.5,
        },
    }
    if with_image:
        case["image"] = f"inversion_{defense.replace(':', '_')}_{update}_r1.png"
    return case


def training(final: float, federation: dict = FACES) -> dict:
    rounds = [{"round": r, "test_accuracy": final * (0.7 + 0.06 * r), "test_loss": 2.0 / r} for r in range(1, 6)]
    return {"federation": {**federation, "test_accuracy": final}, "rounds": rounds, "final_test_accuracy": final}


def audit_results() -> dict:
    from fedleak.results import AuditResults

    results = {
        "kind": "audit",
        "schema_version": 2,
        "fedleak_version": "0.1.0",
        "seed": 0,
        "seconds_total": 212.4,
        "versions": {"python": "3.11.7", "torch": "2.13.0", "opacus": "1.6.0", "flwr": "1.42.0"},
        "config": {"federation": {"dataset": EVIL, "clients": 10, "rounds": 5}},
        "setup": {
            "engine": "local",
            "federations": [FACES, DIGITS],
            "defenses": ["prune:0.99", "dp-sgd:epsilon=8"],
            "threat_model": {
                "server": "honest-but-curious",
                "grants": ["num_samples", "local_steps", "local_lr", "batch_size"],
            },
            "seed": 0,
        },
        "scenarios": [
            {
                "defense": "none",
                "training": training(0.83),
                "membership_training": training(0.93, DIGITS),
                "privacy": [{"federation": "the faces federation"}, {"federation": "the digits federation"}],
                "inversion": [
                    inversion_case("none", [38.2, 31.0, 33.5, 29.9, 12.0]),
                    inversion_case("none", [45.0], update="probe"),
                ],
                "membership": [mia_entry("global", 0.71, 0.08, "roc_none_global.png", 0.93)],
                "text": [
                    {
                        "update": "sent",
                        "attack": "tag",
                        "dataset": "demo-records",
                        "model": "transformer",
                        "targets": [
                            {"text": "patient " + EVIL, "recovered_text": "patient <b>x</b>", "token_accuracy": 0.95},
                            {"text": "the rent is due", "recovered_text": "the rent is due", "token_accuracy": 1.0},
                        ],
                        "summary": {"token_accuracy_median": 0.975, "exact_match_rate": 0.5, "rouge_l_mean": 0.9},
                    }
                ],
            },
            {
                "defense": "prune:0.99",
                "training": training(0.79),
                "membership_training": training(0.90, DIGITS),
                "inversion": [inversion_case("prune:0.99", [11.0, 9.5, 12.2, 10.1, 8.7])],
                "membership": [mia_entry("global", 0.62, 0.03, None, 0.90)],
            },  # no picture: drawn from ROC numbers
            {
                "defense": "dp-sgd:epsilon=8",
                "training": training(0.70),
                "membership_training": training(0.86, DIGITS),
                "privacy": [
                    {"federation": "the faces federation", "epsilon": 7.9, "delta": 1e-5, "accountant": "rdp"},
                    {
                        "federation": "the digits federation",
                        "epsilon": 7.8,
                        "delta": 1e-5,
                        "accountant": "rdp",
                        "epsilon_lower_bound": 0.4,
                    },
                ],
                "inversion": [inversion_case("dp", [7.0, 6.5, 8.1, 7.7, 6.9])],
                "membership": [mia_entry("global", 0.52, 0.011, "roc_dp_global.png", 0.86)],
            },
        ],
        "verdict": [
            f"A curious server rebuilt 4 of 5 client images; dataset {EVIL}.",
            "With prune:0.99 it rebuilt 0.",
        ],
    }
    return AuditResults.from_dict(results).to_dict()  # the fixture is itself checked against the schema


def write_run(folder: Path, results: dict, pictures: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(results))
    if pictures:
        for s in results.get("scenarios", []):
            for i, case in enumerate(s.get("inversion", [])):
                if case.get("image"):
                    (folder / case["image"]).write_bytes(inversion_png(len(case["targets"]), i))
            for entry in s.get("membership", []):
                if entry.get("image"):
                    (folder / entry["image"]).write_bytes(roc_png())
    return folder


@pytest.fixture
def fast_plots(monkeypatch):
    """Stand-ins for the report's own matplotlib plots, where a test is about something else."""
    from fedleak.report import audit_page, views

    tiny = _png(np.ones((2, 2, 3)))
    for module, name in (
        (audit_page, "privacy_utility_png"),
        (audit_page, "accuracy_png"),
        (views, "roc_png"),
    ):
        monkeypatch.setattr(module, name, lambda *a, **k: tiny)


@pytest.fixture(scope="module")
def audit_run(tmp_path_factory) -> tuple[Path, str]:
    run = write_run(tmp_path_factory.mktemp("audit"), audit_results())
    return run, build_report(run).read_text()


def img_sources(page: str) -> list[str]:
    return re.findall(r'<img[^>]*\ssrc="([^"]*)"', page)


def words(page: str) -> str:
    """The page without its embedded pictures (base64 may spell any word)."""
    return re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]*", "data:", page)


def section(page: str, anchor: str) -> str:
    """The words of one section of the page."""
    page = words(page)
    start = page.index(f'<section id="{anchor}"')
    return page[start : page.index("</section>", start)]


# ---- the audit page --------------------------------------------------------------------------------------


def test_audit_report_is_self_contained_and_embeds_every_picture(audit_run):
    run, page = audit_run
    srcs = img_sources(page)
    # 4 inversion pictures (3 sent, 1 probe) + 2 ROC pictures from the folder + 1 ROC drawn from numbers + 2 plots
    assert len(srcs) == 9
    assert all(s.startswith(PNG_URI) for s in srcs)
    for s in srcs:  # each one decodes to a PNG
        import base64

        assert base64.b64decode(s[len(PNG_URI) :], validate=True).startswith(b"\x89PNG\r\n\x1a\n")
    # the acceptance check counts lines with the marker (grep -c): one picture per line
    assert sum(PNG_URI in line for line in page.splitlines()) == 9
    assert not re.search(r"https?://|<link|<iframe|url\(|src=\"(?!data:)", page)
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    # the folder's own inversion picture is embedded byte for byte
    import base64

    own = base64.b64encode((run / "inversion_none_sent_r1.png").read_bytes()).decode()
    assert own in page


def test_audit_report_escapes_every_string_from_results(audit_run):
    _, page = audit_run
    assert "<script" not in page.lower()  # no script at all: the dataset name and texts came escaped
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page


def plain(html: str) -> str:
    return re.sub(r"\s+", " ", htmllib.unescape(re.sub(r"<[^>]+>", " ", html)))


def test_audit_report_sections_in_order_with_numbers(audit_run):
    _, page = audit_run
    anchors = ["verdict", "setup", "reconstructions", "membership", "defenses", "meaning"]
    positions = [page.index(f'<section id="{a}"') for a in anchors]
    assert positions == sorted(positions)
    verdict = section(page, "verdict")
    assert "rebuilt 4 of 5 client images" in verdict  # the verdict results.json carries, shown first
    setup = plain(section(page, "setup"))
    for fact in (  # both federations: every figure's model is listed
        "The faces federation",
        "The digits federation",
        "lenet",
        "10 clients",
        "5 rounds",
        "final test accuracy 83.0%",
        "final test accuracy 93.0%",
        "honest-but-curious",
        "local_lr",
        "prune:0.99",
        "torch 2.13.0",
    ):
        assert fact in setup, fact
    recon = plain(section(page, "reconstructions"))
    assert "38.2 dB" in recon and "4 of 5" in recon and "0 of 5" in recon and "the rent is due" in recon
    assert section(page, "reconstructions").count('class="probe"') == 1
    assert "never counts in the verdict's headline" in recon
    assert recon.count("Realism card") == 4  # one per inversion entry
    assert "a model delta w1 - w0 (FedAvg)" in recon and "3 epoch(s)" in recon and "mini-batch 8" in recon
    assert "a FedSGD gradient of 1 record(s) computed by the audit" in recon  # the probe's card says so
    assert "blank-image PSNR" in recon and "14.0 dB" in recon
    mia = plain(section(page, "membership"))
    assert "0.710" in mia and "8.0%" in mia and "lira" in mia  # AUC and TPR at 1% FPR of the strongest attack
    assert "[0.680, 0.740]" in mia and "[4.0%, 12.8%]" in mia  # intervals
    assert "500 / 500" in mia and "not resolvable" in mia  # counts; 0.1% FPR from 500 non-members
    assert "(the digits federation)" in mia and "trained separately" in mia
    assert "Drawn by the report from the ROC numbers" in mia  # prune's picture was missing
    defenses = section(page, "defenses")
    rows = re.findall(r"<tr[^>]*>\s*<td[^>]*>([^<]*)</td>", defenses)
    assert rows == ["none", "prune:0.99", "dp-sgd:epsilon=8"]
    assert "83.0%" in defenses and "70.0%" in defenses and "93.0%" in defenses and "86.0%" in defenses
    assert "7.80" in defenses and "0.40" in defenses
    assert "BUG" not in words(page)  # 0.4 <= 7.8: nothing to flag
    meaning = section(page, "meaning")
    for word in ("Hungarian", "Clopper-Pearson", "Carlini", "Jagielski", "[0, 1] pixel space", "10 dB above"):
        assert word in meaning


def test_lower_bound_above_epsilon_is_flagged_loudly(tmp_path, fast_plots):
    results = audit_results()
    results["scenarios"][2]["privacy"][1]["epsilon_lower_bound"] = 9.3
    page = words(render_report(write_run(tmp_path / "run", results, pictures=False)))
    assert page.count('class="alert"') == 2  # in the verdict and under the table
    assert page.index('class="alert"') < page.index('<section id="setup"')
    assert "on the digits federation" in page[page.index('class="alert"') :][:400]
    assert re.search(r'<tr class="flag">\s*<td[^>]*>dp-sgd:epsilon=8</td>', page)
    assert "9.30 &gt; ε: BUG" in page


def test_optional_parts_may_be_absent_and_other_schemas_are_refused(tmp_path):
    results = audit_results()
    del results["verdict"], results["setup"], results["versions"], results["config"]
    for s in results["scenarios"]:
        s.pop("membership"), s.pop("text", None), s.pop("privacy", None), s.pop("membership_training", None)
    results["scenarios"][0]["inversion"][0]["image"] = "gone.png"
    page = render_report(write_run(tmp_path / "run", results, pictures=False))
    assert "Membership inference was not run." in page
    assert "gone.png is not in the run folder" in page
    assert "Composed by the report from the numbers below." in page
    assert "honest-but-curious" not in page  # no setup: the default word
    assert "a curious server rebuilt 4 of 5 client images from the updates the clients of the faces" in page
    assert "Probe, not what the clients" in page  # the probe is its own sentence, never in the headline count
    assert img_sources(page) and all(s.startswith(PNG_URI) for s in img_sources(page))  # its own plots

    old = {"kind": "audit", "fedleak_version": "0.0.9", "scenarios": []}  # schema 1 had no schema_version
    with pytest.raises(FedleakInputError, match=r"written by fedleak 0\.0\.9 \(results schema 1\)"):
        render_report(write_run(tmp_path / "old", old))
    odd = audit_results()
    odd["scenarios"][0]["inversion"][0]["targets"][0]["rebuilt"] = "yes"
    with pytest.raises(FedleakInputError, match=r"inversion\[0\]\.targets\[0\]\.rebuilt should be true or false"):
        render_report(write_run(tmp_path / "odd", odd, pictures=False))
    odd = audit_results()
    odd["scenarios"][0]["inversion"][0]["update"] = "guessed"
    with pytest.raises(FedleakInputError, match="expected one of"):
        render_report(write_run(tmp_path / "odd2", odd, pictures=False))


def test_results_schema_round_trips(tmp_path):
    """Every record of the schema survives to_dict -> JSON -> from_dict unchanged (a written results.json
    reads back into equal records), and the schema module needs no torch."""
    from fedleak.results import AuditResults

    results = AuditResults.from_dict(audit_results())
    again = AuditResults.from_dict(json.loads(json.dumps(results.to_dict())))
    assert again == results
    assert again.scenarios[0].inversion[1].update == "probe"
    assert again.scenarios[0].membership[0].attacks["lira"].tpr_at_fpr["0.001"] is None
    assert again.scenarios[2].privacy[1].epsilon_lower_bound == 0.4
    proc = subprocess.run(
        [sys.executable, "-c", "import sys, fedleak.results; print('torch' in sys.modules)"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.stdout.strip() == "False"


def test_picture_paths_cannot_leave_the_run_folder(tmp_path, fast_plots):
    secret = tmp_path / "secret.png"
    secret.write_bytes(roc_png())
    results = audit_results()
    results["scenarios"][0]["inversion"][0]["image"] = "../secret.png"
    results["scenarios"][1]["inversion"][0]["image"] = str(secret)
    run = write_run(tmp_path / "run", results, pictures=False)
    (run / "fake.png").write_text("not a png")
    results["scenarios"][2]["inversion"][0]["image"] = "fake.png"
    (run / "results.json").write_text(json.dumps(results))
    page = render_report(run)
    import base64

    assert base64.b64encode(secret.read_bytes()).decode() not in page
    assert page.count("is not in the run folder") == 4  # and the probe's; ROC pictures are drawn instead


# ---- the verdict, a pure function ------------------------------------------------------------------------


def test_numbers_come_from_sent_updates_and_the_one_rule():
    sent = inversion_case("none", [38.2, 31.0, 33.5, 29.9, 12.0])
    probe = inversion_case("none", [45.0, 44.0], update="probe")
    skipped = {**sent, "status": "not applicable", "targets": [], "summary": None, "note": "no"}
    inv = inversion_numbers([sent, probe, skipped])
    assert (inv.recovered, inv.total) == (4, 5)  # the probe's 2 rebuilt images never join the headline
    assert inv.psnr_median == pytest.approx(31.0) and inv.baseline_psnr_median == 14.0
    assert inversion_numbers([sent, probe], "probe").recovered == 2
    sent["targets"][0]["rebuilt"] = False  # "rebuilt" is each target's own flag: no threshold is re-applied
    assert inversion_numbers([sent]).recovered == 3
    mia = membership_numbers(
        [
            mia_entry("global", 0.71, 0.08, None),
            {"target": "client:3", "attacks": {"rmia": {**roc_block(0.6, 0.2), "auc": 0.6}}},
        ]
    )
    assert mia.auc == pytest.approx(0.71) and mia.auc_by == "lira on the global model"
    assert mia.tpr1 == pytest.approx(0.2) and mia.tpr1_by == "rmia on client 3's update"
    assert mia.federation == "the digits federation" and mia.auc_ci == pytest.approx((0.68, 0.74))
    unresolved = {"target": "global", "attacks": {"loss": {**roc_block(0.6, 0.1), "tpr_at_fpr": {"0.01": None}}}}
    assert membership_numbers([unresolved]).tpr1 is None
    s = scenario_numbers(
        {
            "defense": "dp",
            "training": training(0.6),
            "privacy": [
                {"federation": "a", "epsilon": 2.0},
                {"federation": "b", "epsilon": 2.0, "epsilon_lower_bound": 2.5},
            ],
            "membership": [mia_entry("global", 0.6, 0.05, None, 0.9)],
        }
    )
    assert s.accuracy == 0.6 and s.membership_accuracy == 0.9  # each model's own accuracy
    assert s.privacy.violated and s.privacy.federation == "b" and s.inversion is None


def test_compose_verdict_names_each_federation_and_the_cost_on_it():
    faces, digits = "the faces federation", "the digits federation"
    inv = InversionNumbers(9, 10, 31.04, 0.9, 1.0, 14.0, federation=faces)
    mia = MembershipNumbers(
        0.71,
        "lira on the global model",
        0.08,
        "lira on the global model",
        federation=digits,
        auc_ci=(0.68, 0.74),
        tpr1_ci=(0.05, 0.11),
    )
    base = ScenarioNumbers("none", 0.83, inv, mia, None, None, federation=faces, membership_accuracy=0.93)
    probe = InversionNumbers(4, 4, 45.0, 0.99, 1.0, 14.0, update="probe", federation=faces, records_per_update=1)
    base_with_probe = ScenarioNumbers(
        "none", 0.83, inv, mia, None, None, federation=faces, membership_accuracy=0.93, probe=probe
    )
    prune = ScenarioNumbers(
        "prune:0.99",
        0.79,
        InversionNumbers(0, 10, 11.2, 0.1, 0.3, 14.0, federation=faces),
        MembershipNumbers(0.55, "loss on the global model", 0.012, "lira on the global model", federation=digits),
        None,
        None,
        federation=faces,
        membership_accuracy=0.86,
    )
    dp = ScenarioNumbers(
        "dp-sgd", 0.70, None, None, None, PrivacyNumbers(7.9, 1e-5, "rdp", 8.5, digits), federation=faces
    )
    lines = compose_verdict([prune, dp, base], server="honest-but-curious")
    assert lines[0].startswith(
        "Without a defense, an honest-but-curious server rebuilt 9 of 10 client images from the updates the clients "
        "of the faces federation sent (median PSNR 31.0 dB; a blank image scores 14.0 dB; rebuilt means"
    )
    assert (
        "on the digits federation, the strongest membership attack reaches AUC 0.71 [95% CI 0.68-0.74] (lira on "
        "the global model) and TPR 8.0% [95% CI 5.0%-11.0%] at 1% FPR"
    ) in lines[0]
    assert "Final test accuracy: 83.0% on the faces federation, 93.0% on the digits federation." in lines[0]
    assert "(-4.0 points against no defense)" in lines[1] and "86.0% on the digits federation (-7.0 points" in lines[1]
    assert "ε = 7.90, δ = 1e-05 on the digits federation" in lines[2]
    assert lines[3].startswith("BUG: with dp-sgd on the digits federation") and "8.50" in lines[3]
    with_probe = compose_verdict([base_with_probe])[0]
    assert (
        with_probe.count("rebuilt 9 of 10") == 1
        and "Probe, not what the clients of the faces federation send: "
        "if a client sent the gradient of one record, the server would rebuild 4 of 4 images"
        in with_probe
    )
    no_noise = ScenarioNumbers("clip", 0.8, None, None, None, PrivacyNumbers(1e308, 1e-5, "rdp", None))
    assert "the accountant guarantees no finite ε" in compose_verdict([no_noise])[0]
    assert compose_verdict([]) == ["This run recorded no scenario, so there is nothing to conclude."]
    empty = compose_verdict([ScenarioNumbers("none", None, None, None, None, None)])
    assert empty == ["Without a defense, no attack result was recorded."]


def test_number_formats():
    from fedleak.report.html import fmt_auto, fmt_db, fmt_num, fmt_pct, fmt_sci, show

    assert fmt_num(1e308) == "∞" and fmt_sci(-1e308) == "-∞"  # how runio stores infinity
    assert fmt_num(None) == fmt_pct("") == fmt_db(float("nan")) == "—"
    assert fmt_num(True) == "—" and fmt_num("n/a") == "n/a"
    assert fmt_pct(0.0123) == "1.2%" and fmt_db(31.04) == "31.0 dB" and fmt_sci(0.000123) == "0.00012"
    assert show({"a": [1, 2.5], "b": None}) == "a: 1, 2.5; b: —"
    assert fmt_auto(2.086249e-09) == "2.086e-09" and fmt_auto(83.41885) == "83.42" and fmt_auto(1.0) == "1"


def test_docstring_examples_hold():
    import doctest

    from fedleak.report import measures, verdict

    for module in (measures, verdict):
        failed, tried = doctest.testmod(module)
        assert tried > 0 and failed == 0


# ---- single-experiment pages -----------------------------------------------------------------------------


def test_inversion_run_page(tmp_path):
    case = inversion_case("none", [41.0, 12.0])
    case["summary"]["psnr_min"] = 12.0
    results = {
        "kind": "inversion",
        "attack": "idlg",
        "model": "lenet",
        "dataset": EVIL,
        "seed": 0,
        "targets": case["targets"],
        "summary": case["summary"],
        "seconds_total": 3.2,
    }
    run = write_run(tmp_path / "inv", results)
    (run / "reconstructions.png").write_bytes(inversion_png(2, 0))
    page = build_report(run, tmp_path / "elsewhere" / "r.html").read_text()
    assert (tmp_path / "elsewhere" / "r.html").exists() and not (run / "report.html").exists()
    assert len(img_sources(page)) == 1 and img_sources(page)[0].startswith(PNG_URI)
    page = words(page)
    assert "psnr min <b>12</b>" in page
    assert "Gradient inversion: idlg on lenet" in page and "41.0 dB" in page and "1 of 2" in page
    assert "<script" not in page.lower() and "&lt;script&gt;" in page


def test_text_inversion_run_page(tmp_path):
    """What fedleak's text inversion writes: kind "inversion", modality "text", texts in the targets."""
    results = {
        "kind": "inversion",
        "modality": "text",
        "attack": "tag",
        "model": "transformer",
        "dataset": "demo-records",
        "targets": [
            {
                "index": 3,
                "label": 0,
                "text": "pay " + EVIL,
                "recovered_text": "pay <i>",
                "token_accuracy": 0.5,
            },
            {"index": 4, "label": 1, "text": "a b", "recovered_text": "a b", "token_accuracy": 1.0},
        ],
        "summary": {"token_accuracy_median": 0.75, "exact_match_rate": 0.5, "token_set_exact_rate": 1.0},
    }
    page = words(render_report(write_run(tmp_path / "text", results)))
    assert "Recovered text" in page and "Reconstructions" not in page and img_sources(page) == []
    assert "median token accuracy <b>75.0%</b>" in page and "token set exact rate <b>1</b>" in page
    assert "pay &lt;script&gt;" in page and "pay &lt;i&gt;" in page and "<i>" not in page


def test_membership_run_page_draws_roc_when_the_picture_is_missing(tmp_path):
    entry = mia_entry("global", 0.7, 0.05, None)
    results = {
        "kind": "membership",
        "attack": "all",
        "model": "mlp",
        "dataset": "digits",
        "seed": 0,
        "auc": 0.7,
        "tpr_at_fpr": entry["attacks"]["lira"]["tpr_at_fpr"],
        "balanced_accuracy": 0.6,
        "target": {"train_accuracy": 1.0, "test_accuracy": 0.9},
        "attacks": entry["attacks"],
        "privacy": {"epsilon": 8.0, "delta": 1e-5, "epsilon_lower_bound": 0.3},
    }
    page = render_report(write_run(tmp_path / "mia", results))
    assert len(img_sources(page)) == 1
    page = words(page)
    assert "Drawn by the report" in page
    assert "lira" in page and "loss" in page and "0.700" in page and "10.0%" in page  # generalisation gap
    assert "Clopper-Pearson" in page and "BUG" not in page and "Membership inference: all" not in page
    results["privacy"]["epsilon_lower_bound"] = 8.5
    page = render_report(write_run(tmp_path / "mia", results))
    assert 'class="alert">BUG: with this defense, the measured lower bound ε ≥ 8.50' in page


def test_sweep_page_tabulates_whatever_rows_it_has(tmp_path):
    rows = [{"defense": "none", "psnr": 31.2}, {"defense": EVIL, "auc": 0.61, "extra": [1, 2]}]
    results = {
        "kind": "sweep",
        "dataset": "digits",
        "attacks": {"inversion": "idlg", "membership": "loss"},
        "defenses": ["none", "prune:0.9"],
        "rows": rows,
        "images": ["privacy_utility.png", "absent.png"],
    }
    run = write_run(tmp_path / "sweep", results)
    (run / "privacy_utility.png").write_bytes(roc_png())
    page = render_report(run)
    assert len(img_sources(page)) == 1
    page = words(page)
    header = re.findall(r"<th>([^<]*)</th>", section(page, "sweep"))
    assert header == ["defense", "psnr", "AUC", "extra"]  # readable labels for the known keys
    assert "31.2" in page and "1, 2" in page and "<script" not in page.lower()
    assert "inversion: idlg; membership: loss" in page and "none, prune:0.9" in page  # run facts
    assert "absent.png is not in the run folder" in page


# ---- bad input, the CLI, and the layer rule --------------------------------------------------------------


@pytest.mark.parametrize(
    "content, words",
    [
        (None, "has no results.json"),
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "not an object"),
        ('{"kind": "audti"}', "did you mean 'audit'"),
        ('{"no": "kind"}', "has kind None"),
    ],
)
def test_bad_run_folders_raise_input_errors(tmp_path, content, words):
    if content is not None:
        (tmp_path / "results.json").write_text(content)
    with pytest.raises(FedleakInputError, match=re.escape(words)):
        build_report(tmp_path)
    assert not (tmp_path / "report.html").exists()


def test_cli_report_prints_the_path_and_exits_2_on_bad_input(tmp_path, capsys, fast_plots):
    run = write_run(tmp_path / "run", audit_results(), pictures=False)
    code, out, err = run_cli(["report", run], capsys)
    assert code == 0 and out.strip() == str(run / "report.html") and (run / "report.html").stat().st_size > 0
    code, out, err = run_cli(["report", run / "results.json", "--out", tmp_path / "x.html"], capsys)
    assert code == 0 and out.strip() == str(tmp_path / "x.html")
    assert (tmp_path / "x.html").read_text().startswith("<!doctype html>")
    code, out, err = run_cli(["report", tmp_path / "missing"], capsys)
    assert code == 2 and "does not exist" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_report_does_not_import_torch(tmp_path):
    """The layer rule: building a report loads no torch and, of fedleak, only runio, errors and report."""
    results = audit_results()
    results["scenarios"] = results["scenarios"][:1]
    run = write_run(tmp_path / "run", results, pictures=False)
    code = (
        "import json, sys; from pathlib import Path; from fedleak.report import build_report; "
        f"p = build_report(Path({str(run)!r})); "
        "mods = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'fedleak')); "
        "print(json.dumps([p.exists(), mods]))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    written, modules = json.loads(proc.stdout.strip().splitlines()[-1])
    assert written and "torch" not in modules
    allowed = {"fedleak", "fedleak.errors", "fedleak.runio"}
    assert [m for m in modules if m not in allowed and not m.startswith(("fedleak.report", "fedleak.results"))] == []


# ---- rendering in a real browser -------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--allow-file-access-from-files",
    "--enable-logging=stderr",
    "--v=0",
]

# The page under test stays untouched (its CSP forbids scripts): a probe page loads it in an iframe, beside a
# control page that is broken on purpose (an undecodable picture, a script its CSP blocks) to show that the
# probe sees such faults. Once both frames have loaded, the probe writes what it sees of each (title, size,
# every <img>) as JSON into its own DOM, which --dump-dom prints; console messages go to stderr.
PROBE = """<!doctype html><html><body>
<iframe id="report" src="report.html" width="1200" height="900"></iframe>
<iframe id="control" src="control.html" width="400" height="300"></iframe>
<pre id="probe">NOT LOADED</pre>
<script>
var frames = ["report", "control"], seen = {}, pending = frames.length;
frames.forEach(function (id) {
  document.getElementById(id).addEventListener("load", function () {
    try {
      var d = document.getElementById(id).contentDocument, e = d.documentElement;
      seen[id] = {title: d.title, height: e.scrollHeight, overflow: e.scrollWidth - e.clientWidth,
                  text: d.body.innerText,
                  images: Array.prototype.map.call(d.images, function (im) {
                    return [im.complete, im.naturalWidth, im.naturalHeight]; })};
    } catch (err) { seen[id] = {error: String(err)}; }
    if (--pending === 0) { document.getElementById("probe").textContent = JSON.stringify(seen); }
  });
});
</script></body></html>"""

CONTROL = (
    '<!doctype html><html><head><meta http-equiv="Content-Security-Policy" '
    "content=\"default-src 'none'; img-src data:\"><title>control</title></head><body>"
    f'<img src="{PNG_URI}AAAA"><script>var x = 1;</script></body></html>'
)


def chromium(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=90,
        )


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_report_renders_in_chromium_with_every_image_decoded(audit_run, tmp_path):
    run, page = audit_run
    (tmp_path / "report.html").write_text(page)
    (tmp_path / "control.html").write_text(CONTROL)
    (tmp_path / "probe.html").write_text(PROBE)
    proc = chromium(["--dump-dom", (tmp_path / "probe.html").as_uri()], tmp_path)
    found = re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout, re.S)
    assert proc.returncode == 0 and found, f"chromium exited {proc.returncode}: {proc.stderr[-2000:]}"
    seen = json.loads(htmllib.unescape(found.group(1)))
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    # the probe works: it sees the control's broken picture and the script its CSP blocked
    assert seen["control"]["images"] == [[True, 0, 0]]
    assert any("control.html" in line and "Content Security Policy" in line for line in console), console
    report = seen["report"]
    assert report["title"].startswith("fedleak audit"), report
    assert report["height"] > 2000  # laid out, not an empty page
    assert report["overflow"] <= 0  # nothing wider than the window: wide tables scroll in place
    assert len(report["images"]) == len(img_sources(page)) == 9
    assert all(complete and w > 0 and h > 0 for complete, w, h in report["images"]), report["images"]
    shown = report["text"]  # what a person sees, as the browser laid it out
    assert "not resolvable" in shown and "500 / 500" in shown  # counts, and 0.1% FPR from 500 non-members
    assert "[0.680, 0.740]" in shown and "[4.0%, 12.8%]" in shown  # the AUC's and a TPR's 95% intervals
    assert shown.count("Realism card") == 4 and "PROBE" in shown and "Beyond an honest server's view" in shown
    assert [line for line in console if "report.html" in line] == []  # no console message from the report
