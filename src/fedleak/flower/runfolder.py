"""A Flower run, audited, as a fedleak run folder: ``results.json`` in the audit's schema (one federation: the
app's; one scenario per defense the app ran, here its own setup) and ``report.html``. Every reconstruction an
attack returned is scored against the records of the client that sent the update, when the caller can hand
them over (a simulation knows each partition), and shown as a picture either way.

    write_flower_run("runs/flower", strategy.auditor, federation, records_of=lambda client: (x, y))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import Tensor

from fedleak import __version__
from fedleak.fl.update import ClientUpdate
from fedleak.flower.auditor import Auditor, Finding
from fedleak.metrics.image import image_scores, is_rebuilt, trivial_baselines
from fedleak.report.figures import save_reconstruction_png
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
from fedleak.runio import atomic_write_json

RecordsOf = Callable[[int], tuple[Tensor, Tensor]]  # client -> (inputs as the model sees them, labels)


def _realism(view: ClientUpdate | None, finding: Finding, auditor: Auditor) -> Realism:
    granted = [
        g for g in ("num_samples", "local_steps", "local_lr", "batch_size", "labels") if getattr(auditor.threat, g)
    ]
    return Realism(
        update="sent",
        received=view.kind if view is not None else "delta",
        records_per_update=view.num_samples if view is not None else None,
        local_steps=view.local_steps if view is not None else None,
        local_epochs=None,
        local_batch_size=view.batch_size if view is not None else None,
        num_clients=finding.num_clients,
        granted=granted,
        model_mode="train" if view is None or view.train_mode else "eval",
        bn_prior=None,
        beyond_server=[],
    )


def _view_of(auditor: Auditor, f: Finding) -> ClientUpdate | None:
    return next((v for v in auditor.views if v.round == f.round and v.client == f.client), None)


def write_flower_run(
    out: str | Path,
    auditor: Auditor,
    federation: FederationInfo,
    *,
    accuracy: Mapping[int, float] | None = None,
    records_of: RecordsOf | None = None,
    seed: int = 0,
    report: bool = True,
) -> AuditResults:
    """Write ``out/results.json`` (and ``out/report.html``) for an audited Flower run."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    spec = auditor.data_spec
    entries: list[InversionEntry] = []
    for i, f in enumerate(auditor.findings):
        rec = f.result
        if not hasattr(rec, "pixels"):
            continue  # not a reconstruction (a number, or an error, listed in the notes below)
        view = _view_of(auditor, f)
        recon = rec.pixels.detach().cpu().float()
        targets: list[InversionTarget] = []
        truth = None
        if records_of is not None and f.client is not None and spec is not None:
            x, y = records_of(f.client)
            truth = spec.denormalize(x.float()).clamp(0, 1) if spec.modality == "image" else x.float()
            sc = image_scores(recon, truth)
            base = trivial_baselines(truth)
            for j in range(len(truth)):
                p, s = float(sc["psnr"][j]), float(sc["ssim"][j])
                targets.append(
                    InversionTarget(
                        index=j,
                        label=int(y[j]),
                        recovered_label=None,
                        psnr=p,
                        ssim=s,
                        mse=float(sc["mse"][j]),
                        baseline_psnr=float(base[j]),
                        rebuilt=is_rebuilt(p, s, float(base[j])),
                        seconds=f.seconds / max(1, len(truth)),
                        client=f.client,
                    )
                )
            recon = recon[sc["perm"]]
        image = f"flower_r{f.round}_c{f.client}_{f.attack}_{i}.png"
        shown = min(len(recon), 32)
        save_reconstruction_png(
            out / image,
            (truth if truth is not None else torch.full_like(recon, 0.5))[:shown].numpy(),
            recon[:shown].numpy(),
            [t.psnr for t in targets[:shown]] if targets else [float("nan")] * shown,
            rebuilt=[t.rebuilt for t in targets[:shown]] if targets else None,
        )
        summary = InversionSummary.of(targets, f.seconds) if targets else None
        entries.append(
            InversionEntry(
                update="sent",
                attack=f.attack,
                round=f.round,
                federation=federation.name,
                clients=[f.client] if f.client is not None else [],
                realism=_realism(view, f, auditor),
                targets=targets,
                summary=summary,
                image=image,
                note=None if targets else "not scored: the caller did not hand over this client's records",
            )
        )
    notes = [f"round {f.round}, client {f.client}: {f.attack} failed ({f.error})" for f in auditor.findings if f.error]
    acc = dict(accuracy or {})
    rounds = [RoundRecord(round=int(r), test_accuracy=float(a)) for r, a in sorted(acc.items())]
    final = rounds[-1].test_accuracy if rounds else None
    info = federation.replace(test_accuracy=final)
    results = AuditResults(
        seed=seed,
        fedleak_version=__version__,
        scenarios=[
            Scenario(
                defense="none",
                training=Training(federation=info, rounds=rounds, final_test_accuracy=final),
                inversion=entries,
                skipped=notes,
            )
        ],
        setup=Setup(
            engine="flower",
            federations=[info],
            defenses=[],
            threat_model={
                "server": "honest-but-curious",
                "grants": _realism(None, Finding(0, None, None, 1, ""), auditor).granted,
            },
            seed=seed,
        ),
        config={"flower": auditor.summary()},
    )
    from fedleak.report.verdict import audit_verdict

    results.verdict = audit_verdict(results)
    atomic_write_json(out / "results.json", results.to_dict())
    if report:
        from fedleak.report import build_report

        build_report(out)
    return results
