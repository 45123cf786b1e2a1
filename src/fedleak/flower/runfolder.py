"""An audited Flower run as a fedleak run folder: ``results.json`` (kind ``flower-audit``: per round what the
server saw and which node was which partition; per round, client and attack what was rebuilt, scored against the
client's records when the app hands them over, as in a simulation), one PNG per reconstruction, and a standalone
``report.html``.

    write_flower_run("runs/flower", strategy.auditor, records_of=lambda partition: load_data(partition, 3))
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from fedleak import __version__
from fedleak.data.dataset import DataSpec
from fedleak.errors import FedleakInputError
from fedleak.flower.auditor import Auditor, Finding
from fedleak.flower.report_html import image_grid_png, render
from fedleak.metrics.image import image_scores, is_rebuilt, trivial_baselines
from fedleak.runio import atomic_write_bytes, atomic_write_json

KIND, SCHEMA_VERSION = "flower-audit", 1
SHOWN = 32  # records pictured per entry
RecordsOf = Callable[[int], tuple[Tensor, Tensor]]  # partition -> (inputs as the model sees them, labels)


def _median(xs: list[float]) -> float | None:
    return float(statistics.median(xs)) if xs else None


def _score(f: Finding, x: Tensor, y: Tensor, spec: DataSpec) -> tuple[list[dict[str, Any]], Tensor, Tensor]:
    recon = f.result.pixels.detach().cpu().float()
    truth = spec.denormalize(x.float()).clamp(0, 1) if spec.modality == "image" else x.float()
    if recon.shape[1:] != truth.shape[1:]:
        raise FedleakInputError(
            f"records_of({f.client}) gives records of shape {tuple(truth.shape[1:])}, the reconstruction has "
            f"{tuple(recon.shape[1:])}; hand over the records as the model sees them"
        )
    sc = image_scores(recon, truth)
    base = trivial_baselines(truth)
    targets = []
    for j in range(len(truth)):
        p, s, b = float(sc["psnr"][j]), float(sc["ssim"][j]), float(base[j])
        targets.append(
            {"index": j, "label": int(y[j]), "psnr": p, "ssim": s, "baseline_psnr": b, "rebuilt": is_rebuilt(p, s, b)}
        )
    return targets, truth, recon[sc["perm"]]


def _summary(targets: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    return {
        "targets": len(targets),
        "rebuilt": sum(t["rebuilt"] for t in targets),
        "psnr_median": _median([t["psnr"] for t in targets]),
        "ssim_median": _median([t["ssim"] for t in targets]),
        "baseline_psnr_median": _median([t["baseline_psnr"] for t in targets]),
        "seconds": seconds,
    }


def _rounds(auditor: Auditor, accuracy: Mapping[int, float]) -> list[dict[str, Any]]:
    partition_of = {}
    for f in auditor.findings:
        partition_of[(f.round, f.node_id)] = f.client
    out = []
    for rnd in sorted(set(auditor.seen) | set(accuracy)):
        seen = auditor.seen.get(rnd, {})
        timing = auditor.timing.get(rnd, {})
        nodes = seen.get("node_ids", [])
        clients = [{"node_id": n, "partition": c} for n, c in zip(nodes, seen.get("clients", []), strict=False)]
        out.append(
            {
                "round": rnd,
                "seen": "aggregate" if seen.get("secure_aggregation") else "each client's update",
                "num_clients": seen.get("num_clients"),
                "clients": clients,
                "test_accuracy": accuracy.get(rnd),
                "round_seconds": timing.get("round_seconds"),
                "audit_seconds_on_path": timing.get("audit_seconds_on_path"),
            }
        )
    return out


def write_flower_run(
    out: str | Path,
    auditor: Auditor,
    *,
    accuracy: Mapping[int, float] | None = None,
    records_of: RecordsOf | None = None,
    seed: int = 0,
    app: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``out/results.json`` (kind ``flower-audit``), one PNG per reconstruction and ``out/report.html``;
    waits for attacks still running. ``records_of(partition)`` hands over that client's records (a simulation
    knows them) so each reconstruction is scored; without it the pictures show the reconstructions alone."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    findings = auditor.finish()
    spec = auditor.data_spec
    entries: list[dict[str, Any]] = []
    images: dict[str, bytes] = {}
    notes = [f"round {f.round}, client {f.client}: {f.attack} failed ({f.error})" for f in findings if f.error]
    records_cache: dict[int, tuple[Tensor, Tensor]] = {}
    for i, f in enumerate(findings):
        if not hasattr(f.result, "pixels"):
            if f.error is None:
                notes.append(f"round {f.round}, client {f.client}: {f.attack} gave {f.result!r}")
            continue
        entry: dict[str, Any] = {
            "update": "sent",
            "round": f.round,
            "client": f.client,
            "node_id": f.node_id,
            "seen": f.seen,
            "attack": f.attack,
            "received": f.facts.get("kind", "update"),
            "records_in_update": f.facts.get("num_samples"),
            "local_steps": f.facts.get("local_steps"),
            "targets": [],
            "summary": None,
        }
        recon = f.result.pixels.detach().cpu().float()
        truth = None
        if records_of is not None and f.client is not None and spec is not None:
            if f.client not in records_cache:
                records_cache[f.client] = records_of(f.client)
            targets, truth, recon = _score(f, *records_cache[f.client], spec)
            entry["targets"], entry["summary"] = targets, _summary(targets, f.seconds)
        else:
            entry["note"] = (
                "not scored: an aggregate of several clients"
                if f.client is None
                else "not scored: the app did not hand over this client's records"
            )
        if recon.dim() == 4:
            name = f"r{f.round}_c{f.client}_{f.attack}_{i}.png"
            png = image_grid_png(None if truth is None else truth[:SHOWN].numpy(), recon[:SHOWN].numpy())
            atomic_write_bytes(out / name, png)
            entry["image"], images[name] = name, png
        entries.append(entry)
    results = {
        "kind": KIND,
        "schema_version": SCHEMA_VERSION,
        "fedleak_version": __version__,
        "seed": seed,
        "app": dict(app or {}),
        "audit": {**auditor.summary(), "attack_in": auditor.attack_in, "keep_views": auditor.keep_views},
        "views_dir": str(auditor.views_dir) if auditor.views_dir is not None else None,
        "rounds": _rounds(auditor, dict(accuracy or {})),
        "inversion": entries,
        "notes": notes,
    }
    atomic_write_json(out / "results.json", results)
    atomic_write_bytes(out / "report.html", render(results, images).encode())
    return results
