"""An audited Flower run as a fedleak run folder in the audit's schema (:class:`fedleak.results.AuditResults`,
kind "audit"): ``results.json`` whose one scenario holds the run's rounds (which client replied from which node,
the test accuracy, the round's wall time and the audit's share of it) and one inversion entry per round, client
and attack (what the server received, the realism card, each reconstruction scored against that client's
records when the app hands them over: ``psnr``, ``ssim``, ``baseline_psnr``, ``rebuilt``), one PNG per
reconstruction, and the audit's ``report.html`` (``fedleak report RUN_DIR`` rebuilds it).

    write_flower_run("runs/flower", strategy.auditor, records_of=lambda partition: load_data(partition, 3))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from fedleak import __version__
from fedleak.data.dataset import DataSpec
from fedleak.errors import FedleakInputError
from fedleak.fl.update import GRANTABLE
from fedleak.flower.auditor import Auditor, Finding
from fedleak.metrics.image import image_scores, is_rebuilt, trivial_baselines
from fedleak.report import build_report
from fedleak.report.figures import reconstruction_png, thumbnails_png
from fedleak.report.measures import inversion_numbers
from fedleak.report.verdict import inversion_phrase
from fedleak.results import (
    AuditResults,
    FederationInfo,
    InversionEntry,
    InversionSummary,
    InversionTarget,
    Realism,
    RoundRecord,
    Scenario,
    Setup,
    Training,
)
from fedleak.runio import atomic_write_bytes, atomic_write_json

FEDERATION = "the Flower run"
SHOWN = 32  # records pictured per entry
RecordsOf = Callable[[int], tuple[Tensor, Tensor]]  # client (partition) -> (inputs as the model sees them, labels)


class _Records:
    """The clients' records as the app hands them over, in [0, 1] pixels, fetched once per client."""

    def __init__(self, records_of: RecordsOf | None, spec: DataSpec | None) -> None:
        self.records_of, self.spec = records_of, spec
        self.cache: dict[int, tuple[Tensor, Tensor]] = {}

    def why_not(self, f: Finding) -> str | None:
        """Why the reconstruction of ``f`` cannot be scored, or None when it can."""
        if f.client is None or f.num_clients > 1:
            return f"not scored: the server saw only the aggregate of {f.num_clients} clients"
        if self.records_of is None:
            return "not scored: the app did not hand over this client's records (records_of)"
        if self.spec is None or self.spec.modality != "image":
            return "not scored: scoring needs image data and the auditor's data_spec"
        return None

    def of(self, client: int) -> tuple[Tensor, Tensor]:
        if client not in self.cache:
            assert self.records_of is not None and self.spec is not None
            x, y = self.records_of(client)
            x, y = torch.as_tensor(x).detach().cpu().float(), torch.as_tensor(y).detach().cpu().long()
            if not bool(torch.isfinite(x).all()):
                raise FedleakInputError(f"records_of({client}) gives non-finite inputs; hand over the client's records")
            self.cache[client] = (self.spec.denormalize(x).clamp(0, 1), y)
        return self.cache[client]

    def mean_image(self) -> Tensor | None:
        """The mean image of every record handed over: the second trivial baseline (a picture of what such data
        looks like on average, which carries nothing of one record)."""
        if not self.cache:
            return None
        return torch.cat([x for x, _ in self.cache.values()]).double().mean(0, keepdim=True)


def _realism(f: Finding, auditor: Auditor) -> Realism:
    facts = f.facts
    delta = facts.get("kind") == "delta"
    extras = getattr(f.result, "extras", None) or {}
    return Realism(
        update="sent",
        received=str(facts.get("kind", "update")),
        records_per_update=facts.get("num_samples"),
        local_steps=facts.get("local_steps") if delta else None,
        local_epochs=facts.get("local_epochs") if delta else None,
        local_batch_size=facts.get("batch_size") if delta else None,
        num_clients=f.num_clients,
        granted=[g for g in GRANTABLE if getattr(auditor.threat, g)],
        model_mode="train" if facts.get("train_mode", True) else "eval",
        bn_prior=bool(extras.get("bn_prior")) if facts.get("batchnorm") else None,
    )


def _targets(f: Finding, recon: Tensor, truth: Tensor, labels: Tensor, mean: Tensor | None) -> tuple[list, Tensor]:
    """Each of the client's records scored against its matched reconstruction; returns the targets and the
    reconstructions in the records' order."""
    if recon.shape[1:] != truth.shape[1:]:
        raise FedleakInputError(
            f"records_of({f.client}) gives records of shape {tuple(truth.shape[1:])}, the reconstruction has "
            f"{tuple(recon.shape[1:])}; hand over the records as the model sees them"
        )
    sc = image_scores(recon, truth)
    base = trivial_baselines(truth, mean)
    perm = sc["perm"]
    guessed = getattr(f.result, "labels", None)
    targets = []
    for j in range(len(truth)):
        p, s, b = float(sc["psnr"][j]), float(sc["ssim"][j]), float(base[j])
        rl = int(guessed[perm[j]]) if guessed is not None and len(guessed) == len(recon) else None
        targets.append(
            InversionTarget(
                index=j,
                label=int(labels[j]),
                recovered_label=rl,
                psnr=p,
                ssim=s,
                mse=float(sc["mse"][j]),
                baseline_psnr=b,
                rebuilt=is_rebuilt(p, s, b),
                seconds=f.seconds / max(1, len(truth)),
                client=f.client,
            )
        )
    return targets, recon[perm]


def _picture(
    out: Path, name: str, recon: Tensor, truth: Tensor | None, targets: list, spec: DataSpec | None
) -> str | None:
    if recon.dim() != 4:
        return None
    names = spec.class_names if spec is not None else ()

    def label(i: int | None) -> str:
        return "?" if i is None else (names[i] if i < len(names) else str(i))

    if truth is not None:
        shown = targets[:SHOWN]
        png = reconstruction_png(
            truth[:SHOWN].numpy(),
            recon[:SHOWN].numpy(),
            [t.psnr for t in shown],
            labels=[label(t.label) for t in shown],
            recovered_labels=[label(t.recovered_label) for t in shown],
            rebuilt=[t.rebuilt for t in shown],
        )
    else:
        png = thumbnails_png(recon[:SHOWN].clamp(0, 1).numpy(), [f"#{j}" for j in range(min(SHOWN, len(recon)))])
    atomic_write_bytes(out / name, png)
    return name


def _entry(i: int, f: Finding, auditor: Auditor, records: _Records, out: Path) -> InversionEntry:
    base: dict[str, Any] = {
        "update": "sent",
        "attack": f.attack,
        "round": f.round,
        "federation": FEDERATION,
        "clients": [f.client] if f.client is not None and f.num_clients == 1 else [],
        "realism": _realism(f, auditor),
    }
    if f.error is not None:  # an attack that did not fit says so with a FedleakInputError; others failed
        status = "not applicable" if f.error.startswith("FedleakInputError") else "failed"
        return InversionEntry(**base, status=status, note=f.error)
    pixels = getattr(f.result, "pixels", None)
    if not isinstance(pixels, Tensor):
        return InversionEntry(
            **base, note=f"returned {type(f.result).__name__} {str(f.result)[:200]}: no reconstruction to score"
        )
    recon = pixels.detach().cpu().float()
    if not bool(torch.isfinite(recon).all()):
        return InversionEntry(**base, status="failed", note="the attack returned non-finite pixels")
    notes = [n] if (n := (getattr(f.result, "extras", None) or {}).get("note")) else []
    who = "agg" if not base["clients"] else f"c{f.client}"
    image = f"flower_r{f.round}_{who}_{f.attack}_{i}.png"
    why = records.why_not(f)
    if why is not None:
        notes.append(why)
        image = _picture(out, image, recon, None, [], auditor.data_spec)
        return InversionEntry(**base, note="; ".join(notes), image=image)
    truth, labels = records.of(f.client)  # type: ignore[arg-type]
    targets, matched = _targets(f, recon, truth, labels, records.mean_image())
    summary = InversionSummary.of(targets, f.seconds)
    if summary.rebuilt == 0:
        notes.append("nothing rebuilt: no reconstruction beat the trivial baselines by the rule")
    if len(targets) > SHOWN:
        notes.append(f"pictured: the first {SHOWN} of {len(targets)} records")
    image = _picture(out, image, matched, truth, targets, auditor.data_spec)
    return InversionEntry(**base, targets=targets, summary=summary, image=image, note="; ".join(notes) or None)


def _rounds(auditor: Auditor, accuracy: Mapping[int, float]) -> list[RoundRecord]:
    out = []
    for rnd in sorted(set(auditor.seen) | set(accuracy)):
        seen = auditor.seen.get(rnd, {})
        timing = auditor.timing.get(rnd, {})
        aggregate = bool(seen.get("secure_aggregation"))
        out.append(
            RoundRecord(
                round=rnd,
                test_accuracy=accuracy.get(rnd),
                clients=[] if aggregate else [c for c in seen.get("clients", []) if c is not None],
                node_ids=list(seen.get("node_ids", [])),
                seconds=timing.get("round_seconds"),
                audit_seconds_on_path=timing.get("audit_seconds_on_path"),
            )
        )
    return out


def _federation(auditor: Auditor, rounds: list[RoundRecord], app: Mapping[str, Any]) -> FederationInfo:
    facts = next((f.facts for f in auditor.findings if f.facts), {})
    kind = facts.get("kind")
    spec = auditor.data_spec
    clients = {c for r in rounds for c in r.clients}
    final = next((r.test_accuracy for r in reversed(rounds) if r.test_accuracy is not None), None)
    return FederationInfo(
        name=FEDERATION,
        dataset=str(app.get("dataset") or (spec.name if spec is not None else "not said")),
        model=str(app.get("model") or auditor.model),
        clients=int(app.get("clients") or len(clients)),
        rounds=int(app.get("rounds") or max((r.round for r in rounds), default=0)),
        mode={"delta": "fedavg", "gradient": "fedsgd"}.get(kind, "not seen"),
        local_epochs=facts.get("local_epochs") if kind == "delta" else None,
        batch_size=facts.get("batch_size"),
        lr=facts.get("local_lr"),
        partition=str(app.get("partition") or "the app's own"),
        test_accuracy=final,
    )


def _verdict(entries: list[InversionEntry], fed: FederationInfo, server: str = "curious") -> list[str]:
    lines = []
    inv = inversion_numbers([e.to_dict() for e in entries if e.targets], "sent")
    attacks = sorted({e.attack for e in entries if e.targets})
    if inv is not None:
        lines.append(f"A {server} server running {', '.join(attacks)} {inversion_phrase(inv, explain=True)}.")
    unscored = [e for e in entries if e.status == "done" and not e.targets]
    pictured = [e for e in unscored if e.image]
    if pictured:
        why = sorted({(e.note or "not scored").split("; ")[-1] for e in pictured})
        lines.append(
            f"{len(pictured)} reconstruction(s) could not be scored ({'; '.join(why)}); the report shows them as "
            "pictures only."
        )
    other = sorted({e.attack for e in unscored if not e.image})
    if other:
        lines.append(f"{', '.join(other)} returned no reconstruction; what each returned is recorded as it came.")
    if not entries:
        lines.append("The audit recorded no attack on this run (attacks ran in none of its rounds).")
    elif inv is None and not unscored:
        lines.append("No attack returned a reconstruction; see why under Reconstructions.")
    failed = sum(e.status == "failed" for e in entries)
    skipped = sum(e.status == "not applicable" for e in entries)
    if failed or skipped:
        lines.append(f"{failed} attack run(s) failed and {skipped} did not apply; each says why under Reconstructions.")
    if any(e.realism.num_clients > 1 for e in entries):
        lines.append(
            "In some rounds the server saw only the sum of several clients' updates (secure aggregation): an "
            "attack's output there is a mixture, scored against no single client."
        )
    if fed.test_accuracy is not None:
        lines.append(f"Final test accuracy: {100 * fed.test_accuracy:.1f}% on {fed.name}.")
    return lines


def _flower_version() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return {"flwr": version("flwr")}
    except PackageNotFoundError:
        return {}


def write_flower_run(
    out: str | Path,
    auditor: Auditor,
    *,
    accuracy: Mapping[int, float] | None = None,
    records_of: RecordsOf | None = None,
    seed: int = 0,
    app: Mapping[str, Any] | None = None,
    defense: str | None = None,
) -> AuditResults:
    """Write ``out/results.json`` (an :class:`AuditResults`), one PNG per reconstruction and the audit's
    ``out/report.html``; waits for attacks still running and returns the results.

    ``accuracy``: round -> test accuracy of the global model. ``records_of(client)`` hands over the records
    behind that client's update (a simulation knows them: its partition), as the model sees them, so that each
    reconstruction is scored; without it the pictures show the reconstructions alone. ``app``: facts about the
    app (``model``, ``dataset``, ``clients``, ``rounds``, ``partition``, ...), kept in the results' config.
    ``defense``: what the app applies to the clients' updates (the wrapper cannot see inside a client); default
    "none", or "secagg" when the server saw only aggregates."""
    out = Path(out)
    app = dict(app or {})
    findings = auditor.finish()
    records = _Records(records_of, auditor.data_spec)
    for f in findings:  # every client's records first: the mean image of them all is a trivial baseline
        if f.error is None and records.why_not(f) is None and isinstance(getattr(f.result, "pixels", None), Tensor):
            records.of(f.client)  # type: ignore[arg-type]
    entries = [_entry(i, f, auditor, records, out) for i, f in enumerate(findings)]
    rounds = _rounds(auditor, dict(accuracy or {}))
    fed = _federation(auditor, rounds, app)
    summary = auditor.summary()
    if defense is None:
        defense = "secagg" if summary["secure_aggregation"] else "none"
    granted = [g for g in GRANTABLE if getattr(auditor.threat, g)]
    results = AuditResults(
        seed=seed,
        fedleak_version=__version__,
        scenarios=[
            Scenario(
                defense=defense,
                training=Training(federation=fed, rounds=rounds, final_test_accuracy=fed.test_accuracy),
                inversion=entries,
            )
        ],
        setup=Setup(
            engine="flower",
            federations=[fed],
            defenses=[defense],
            threat_model={"server": "curious", "grants": granted},
            seed=seed,
        ),
        config={
            "app": app,
            "audit": {
                "attacks": [name for name, _ in auditor.attacks],
                "attack_in": auditor.attack_in,
                "keep_views": auditor.keep_views,
                "views_dir": str(auditor.views_dir) if auditor.views_dir is not None else None,
                "records_handed_over": records_of is not None,
                "views": summary["views"],
                "findings": summary["findings"],
                "errors": summary["errors"],
            },
        },
        versions=_flower_version(),
        verdict=_verdict(entries, fed),
    )
    atomic_write_json(out / "results.json", results.to_dict())
    build_report(out)
    return results


def previous_run(run_dir: Path) -> tuple[dict[int, float], dict[int, dict[str, float]], dict[str, Any]]:
    """What an earlier write of ``run_dir`` knew that the saved views do not: per round the test accuracy and the
    timing, and the app's facts. Empty when there is no readable results.json of this schema."""
    import json

    from fedleak.results import check_schema

    try:
        raw = json.loads((Path(run_dir) / "results.json").read_text())
        check_schema(raw)
        res = AuditResults.from_dict(raw)
    except (OSError, ValueError, FedleakInputError):
        return {}, {}, {}
    accuracy, timing = {}, {}
    for sc in res.scenarios[:1]:
        for r in sc.training.rounds:
            if r.test_accuracy is not None:
                accuracy[r.round] = r.test_accuracy
            if r.seconds is not None:
                timing[r.round] = {"round_seconds": r.seconds, "audit_seconds_on_path": r.audit_seconds_on_path}
    return accuracy, timing, dict(res.config.get("app") or {})
