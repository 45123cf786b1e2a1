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


def mia_entry(target: str, auc: float, tpr1: float, image: str | None) -> dict:
    attacks = {
        name: {
            "auc": auc - d,
            "tpr_at_fpr": {"0.001": tpr1 / 4, "0.01": tpr1 * (1 - d), "0.1": 0.3 - d},
            "balanced_accuracy": auc - 0.05 - d,
            "roc": roc_curve(auc - 0.5 - d),
        }
        for name, d in (("lira", 0.0), ("loss", 0.08))
    }
    entry = {
        "target": target,
        "description": f"{target} model",
        "attacks": attacks,
        "target_accuracy": {"train_accuracy": 1.0, "test_accuracy": 0.8},
    }
    if image:
        entry["image"] = image
    return entry


def inversion_case(defense: str, psnrs: list[float], with_image: bool = True) -> dict:
    targets = [
        {
            "index": 12 + i,
            "label": i % 3,
            "recovered_label": i % 3 if p > 20 else (i + 1) % 3,
            "psnr": p,
            "ssim": min(1.0, p / 40),
            "mse": 10 ** (-p / 10),
        }
        for i, p in enumerate(psnrs)
    ]
    case = {
        "attack": "idlg",
        "round": 1,
        "client": 3,
        "update_kind": "gradient",
        "num_clients": 1,
        "targets": targets,
        "summary": {
            "psnr_median": float(np.median(psnrs)),
            "psnr_mean": float(np.mean(psnrs)),
            "ssim_mean": float(np.mean([t["ssim"] for t in targets])),
            "label_accuracy": float(np.mean([t["label"] == t["recovered_label"] for t in targets])),
            "recovered": sum(p >= 25 for p in psnrs),
            "total": len(psnrs),
            "recovered_threshold_db": 25,
        },
    }
    if with_image:
        case["image"] = f"inversion_{defense.replace(':', '_')}_idlg_r1_c3.png"
    return case


def training(final: float) -> dict:
    rounds = [{"round": r, "test_accuracy": final * (0.7 + 0.06 * r), "test_loss": 2.0 / r} for r in range(1, 6)]
    return {"rounds": rounds, "final_test_accuracy": final}


def audit_results() -> dict:
    return {
        "kind": "audit",
        "fedleak_version": "0.1.0",
        "seed": 0,
        "seconds_total": 212.4,
        "versions": {"python": "3.11.7", "torch": "2.13.0", "opacus": "1.6.0", "flwr": "1.42.0"},
        "config": {
            "data": {"dataset": EVIL, "partition": "iid"},
            "federation": {"clients": 10, "rounds": 5},
            "defenses": ["none", "prune:0.99", "dp-sgd:epsilon=8"],
        },
        "setup": {
            "engine": "local",
            "dataset": EVIL,
            "partition": "iid",
            "model": "lenet",
            "clients": 10,
            "rounds": 5,
            "fraction": 1.0,
            "mode": "fedavg",
            "local_epochs": 1,
            "batch_size": 8,
            "lr": 0.1,
            "threat_model": {
                "server": "honest-but-curious",
                "grants": ["num_samples", "local_steps", "local_lr", "batch_size"],
            },
        },
        "scenarios": [
            {
                "defense": "none",
                "training": training(0.83),
                "privacy": {},
                "inversion": [inversion_case("none", [38.2, 31.0, 33.5, 29.9, 12.0])],
                "membership": [mia_entry("global", 0.71, 0.08, "roc_none_global.png")],
                "text": [
                    {
                        "attack": "tag",
                        "targets": [
                            {
                                "text": "patient " + EVIL,
                                "recovered_text": "patient <b>x</b>",
                                "token_accuracy": 0.95,
                            },
                            {
                                "text": "the rent is due",
                                "recovered_text": "the rent is due",
                                "token_accuracy": 1.0,
                            },
                        ],
                        "summary": {
                            "token_accuracy_median": 0.975,
                            "exact_match_rate": 0.5,
                            "rouge_l_mean": 0.9,
                        },
                    }
                ],
            },
            {
                "defense": "prune:0.99",
                "training": training(0.79),
                "privacy": {},
                "inversion": [inversion_case("prune:0.99", [11.0, 9.5, 12.2, 10.1, 8.7])],
                "membership": [mia_entry("global", 0.62, 0.03, None)],
            },  # no picture: drawn from ROC numbers
            {
                "defense": "dp-sgd:epsilon=8",
                "training": training(0.70),
                "privacy": {"epsilon": 7.9, "delta": 1e-5, "accountant": "rdp", "epsilon_lower_bound": 0.4},
                "inversion": [inversion_case("dp", [7.0, 6.5, 8.1, 7.7, 6.9])],
                "membership": [mia_entry("global", 0.52, 0.011, "roc_dp_global.png")],
            },
        ],
        "verdict": [
            f"A curious server rebuilt 4 of 5 client images; dataset {EVIL}.",
            "With prune:0.99 it rebuilt 0.",
        ],
    }


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
    # 3 inversion pictures + 2 ROC pictures from the folder + 1 ROC drawn from numbers + 2 plots of its own
    assert len(srcs) == 8
    assert all(s.startswith(PNG_URI) for s in srcs)
    for s in srcs:  # each one decodes to a PNG
        import base64

        assert base64.b64decode(s[len(PNG_URI) :], validate=True).startswith(b"\x89PNG\r\n\x1a\n")
    # the acceptance check counts lines with the marker (grep -c): one picture per line
    assert sum(PNG_URI in line for line in page.splitlines()) == 8
    assert not re.search(r"https?://|<link|<iframe|url\(|src=\"(?!data:)", page)
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    # the folder's own inversion picture is embedded byte for byte
    import base64

    own = base64.b64encode((run / "inversion_none_idlg_r1_c3.png").read_bytes()).decode()
    assert own in page


def test_audit_report_escapes_every_string_from_results(audit_run):
    _, page = audit_run
    assert "<script" not in page.lower()  # no script at all: the dataset name and texts came escaped
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page


def test_audit_report_sections_in_order_with_numbers(audit_run):
    _, page = audit_run
    anchors = ["verdict", "setup", "reconstructions", "membership", "defenses", "meaning"]
    positions = [page.index(f'<section id="{a}"') for a in anchors]
    assert positions == sorted(positions)
    verdict = section(page, "verdict")
    assert "rebuilt 4 of 5 client images" in verdict  # the verdict results.json carries, shown first
    setup = htmllib.unescape(re.sub(r"<[^>]+>", " ", section(page, "setup")))
    for fact in (
        "lenet",
        "10 clients",
        "5 rounds",
        "honest-but-curious",
        "local_lr",
        "prune:0.99",
        "torch 2.13.0",
    ):
        assert fact in setup
    recon = section(page, "reconstructions")
    assert "38.2 dB" in recon and "4 of 5" in recon and "0 of 5" in recon and "the rent is due" in recon
    mia = section(page, "membership")
    assert "0.710" in mia and "8.0%" in mia and "lira" in mia  # AUC and TPR at 1% FPR of the strongest attack
    assert "Drawn by the report from the ROC numbers" in mia  # prune's picture was missing
    defenses = section(page, "defenses")
    rows = re.findall(r"<tr[^>]*>\s*<td[^>]*>([^<]*)</td>", defenses)
    assert rows == ["none", "prune:0.99", "dp-sgd:epsilon=8"]
    assert "83.0%" in defenses and "70.0%" in defenses and "7.90" in defenses and "0.40" in defenses
    assert "BUG" not in words(page)  # 0.4 <= 7.9: nothing to flag
    meaning = section(page, "meaning")
    for word in ("Hungarian", "Clopper-Pearson", "Carlini", "Jagielski", "[0, 1] pixel space", "25 dB"):
        assert word in meaning


def test_lower_bound_above_epsilon_is_flagged_loudly(tmp_path, fast_plots):
    results = audit_results()
    results["scenarios"][2]["privacy"]["epsilon_lower_bound"] = 9.3
    page = words(render_report(write_run(tmp_path / "run", results, pictures=False)))
    assert page.count('class="alert"') == 2  # in the verdict and under the table
    assert page.index('class="alert"') < page.index('<section id="setup"')
    assert re.search(r'<tr class="flag">\s*<td[^>]*>dp-sgd:epsilon=8</td>', page)
    assert "9.30 &gt; ε: BUG" in page


def test_missing_keys_degrade_gracefully(tmp_path):
    results = audit_results()
    del results["verdict"], results["setup"], results["versions"], results["config"]
    for s in results["scenarios"]:
        s.pop("membership"), s.pop("text", None), s.pop("privacy")
    results["scenarios"][1].pop("training")
    results["scenarios"][0]["inversion"][0]["image"] = "gone.png"
    page = render_report(write_run(tmp_path / "run", results, pictures=False))
    assert "Membership inference was not run." in page
    assert "gone.png is not in the run folder" in page
    assert "Composed by the report from the numbers below." in page
    assert "honest-but-curious" not in page  # no setup: the default word
    assert "Without a defense, a curious server rebuilt 4 of 5 client images" in page
    assert img_sources(page) and all(s.startswith(PNG_URI) for s in img_sources(page))  # its own plots

    bare = {"kind": "audit"}
    page = render_report(write_run(tmp_path / "bare", bare))
    assert "no scenario" in page and "Gradient inversion was not run." in page

    wrong_types = {
        "kind": "audit",
        "setup": [],
        "scenarios": [
            None,
            "x",
            {"defense": 3, "inversion": {}, "membership": [{"attacks": []}], "training": {"rounds": "x"}},
        ],
        "verdict": 5,
        "seed": {"a": 1},
    }
    page = render_report(write_run(tmp_path / "odd", wrong_types, pictures=False))
    assert '<section id="meaning"' in page


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
    assert page.count("is not in the run folder") == 3  # ROC pictures are drawn from the numbers instead


def test_audit_report_reads_the_shapes_the_pipeline_writes(tmp_path, fast_plots):
    """What fedleak.audit writes beside the documented shape: ROC under "curve", a case over several clients,
    labels not recovered (None), a skipped case, text at the top level, a separate membership federation."""
    results = audit_results()
    del results["verdict"]
    results["setup"].update({"defenses": ["prune:0.99"], "seed": 0, "test_fraction": 0.2})
    base = results["scenarios"][0]
    text_case = base.pop("text")[0]
    results["text"] = text_case
    case = base["inversion"][0]
    case.pop("client")
    case["clients"] = [3, 7]
    for i, t in enumerate(case["targets"]):
        t["client"] = [3, 7][i % 2]
        t["recovered_label"] = None
    base["inversion"].append({"attack": "ig", "round": 5, "skipped": "round 5 was not kept"})
    for entry in base["membership"]:
        entry.pop("image")
        for a in entry["attacks"].values():
            a["curve"] = a.pop("roc")
    base["membership_training"] = {"dataset": "digits", "rounds": [], "final_test_accuracy": 0.91}
    page = words(render_report(write_run(tmp_path / "run", results, pictures=False)))
    recon = section(page, "reconstructions")
    assert "clients 3, 7" in recon and "Not run: round 5 was not kept" in recon
    undefended = recon[: recon.index("Defense: prune:0.99")]
    assert '<th class="n">client</th>' in undefended and "✓" not in undefended and "✗" not in undefended
    assert "the rent is due" in recon  # top-level text shown with the undefended scenario
    mia = section(page, "membership")
    assert mia.count("Drawn by the report from the ROC numbers") == 3  # from "curve" once, from "roc" twice
    assert "trained separately on digits; its final test accuracy is 91.0%" in mia
    verdict = section(page, "verdict")
    assert "recovered a median 97.5% of the tokens" in verdict
    setup = section(page, "setup")
    assert "Test fraction" in setup and setup.count("Seed") == 1 and "Defenses compared" in setup


# ---- the verdict, a pure function ------------------------------------------------------------------------


def test_numbers_from_scenarios():
    inv = inversion_numbers(
        [
            inversion_case("none", [38.2, 31.0, 33.5, 29.9, 12.0]),
            {"targets": [{"psnr": 26.0}, {"psnr": 20.0}], "summary": {}},
        ]
    )
    assert (inv.recovered, inv.total) == (5, 7)  # 4 from the summary, 1 counted at the default 25 dB
    assert inv.psnr_median == pytest.approx(29.9)
    mia = membership_numbers(
        [
            mia_entry("global", 0.71, 0.08, None),
            {"target": "client:3", "attacks": {"rmia": {"auc": 0.6, "tpr_at_fpr": {"0.01": 0.2}}}},
        ]
    )
    assert mia.auc == pytest.approx(0.71) and "lira" in mia.auc_by
    assert mia.tpr1 == pytest.approx(0.2) and mia.tpr1_by == "rmia on client 3's update"
    assert mia.auc_by == "lira on the global model"
    s = scenario_numbers(
        {
            "defense": "dp",
            "training": {"rounds": [{"round": 1, "test_accuracy": 0.5}, {"round": 2, "test_accuracy": 0.6}]},
            "privacy": {"epsilon": 2.0, "epsilon_lower_bound": 2.5},
        }
    )
    assert s.accuracy == 0.6 and s.privacy.violated and s.inversion is None and s.membership is None


def test_compose_verdict_states_the_numbers_and_the_cost_of_each_defense():
    base = ScenarioNumbers(
        "none",
        0.83,
        InversionNumbers(9, 10, 31.04, 0.9, 1.0, 25.0),
        MembershipNumbers(0.71, "lira on the final model", 0.08, "lira on the final model"),
        None,
        None,
    )
    prune = ScenarioNumbers(
        "prune:0.99",
        0.79,
        InversionNumbers(0, 10, 11.2, 0.1, 0.3, 25.0),
        MembershipNumbers(0.55, "loss on the final model", 0.012, "lira on the final model"),
        None,
        None,
    )
    dp = ScenarioNumbers("dp-sgd", 0.70, None, None, None, PrivacyNumbers(7.9, 1e-5, "rdp", 8.5))
    lines = compose_verdict([prune, dp, base], server="honest-but-curious")
    assert lines[0].startswith(
        "Without a defense, an honest-but-curious server rebuilt 9 of 10 client images (median PSNR 31.0 dB"
    )
    assert "AUC 0.71 (lira on the final model) and TPR 8.0% at 1% FPR (guessing: AUC 0.50, TPR 1%)." in lines[0]
    assert "83.0% test accuracy." in lines[0]
    assert "With prune:0.99, the server rebuilt 0 of 10 client images (median PSNR 11.2 dB)" in lines[1]
    assert "TPR 1.2% at 1% FPR (lira on the final model)" in lines[1]
    assert "(-4.0 percentage points against no defense)" in lines[1]
    assert "ε = 7.90, δ = 1e-05" in lines[2] and "(-13.0 percentage points against no defense)" in lines[2]
    assert lines[3].startswith("BUG: with dp-sgd") and "8.50" in lines[3]
    assert compose_verdict([dp, base], violations=False)[-1].startswith("With dp-sgd")
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
    assert header == ["defense", "psnr", "auc", "extra"]
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
    assert [m for m in modules if m not in allowed and not m.startswith("fedleak.report")] == []


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
    assert len(report["images"]) == len(img_sources(page)) == 8
    assert all(complete and w > 0 and h > 0 for complete, w, h in report["images"]), report["images"]
    assert [line for line in console if "report.html" in line] == []  # no console message from the report
