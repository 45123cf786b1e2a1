"""The inversion case: attack a list of client updates and score every reconstruction against the records
behind it, with the one rule of "rebuilt" (:func:`fedleak.metrics.image.is_rebuilt`) and each target's trivial
baseline. ``fedleak invert`` and the audit's inversion stage both call :func:`attack_and_score`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from fedleak.attacks.inversion import invert_batch
from fedleak.attacks.inversion.identifiability import for_update
from fedleak.data import Dataset
from fedleak.fl import ClientUpdate, ThreatModel
from fedleak.metrics.image import image_scores, is_rebuilt, trivial_baselines
from fedleak.results import InversionSummary, InversionTarget, Realism


@dataclass
class ScoredInversion:
    targets: list[InversionTarget]
    summary: InversionSummary
    originals: Tensor  # [0, 1] pixels of every target, in target order
    reconstructions: Tensor  # the matched reconstruction of each
    recs: list[Any]  # the attack's Reconstruction records
    label_method: str
    notes: list[str]  # what the attack itself reported (a batch beyond reach, an inconsistency)


def dataset_mean_image(data: Dataset, limit: int = 2000) -> Tensor:
    """The mean [0, 1] image of (up to ``limit`` records of) the data the server could know the format of: the
    second trivial baseline."""
    n = min(len(data), limit)
    return data.pixels(list(range(n))).double().mean(0, keepdim=True)


def attack_and_score(
    updates: Sequence[ClientUpdate],
    originals: Sequence[Dataset],
    attack: str,
    options: dict[str, Any],
    dataset_mean: Tensor | None,
    clients: Sequence[int | None] | None = None,
) -> ScoredInversion:
    """Run ``attack`` on all ``updates`` at once and score each against ``originals`` (the records behind each
    update), matched (Hungarian) and compared with the trivial baselines."""
    t0 = time.perf_counter()
    recs = invert_batch(list(updates), attack, **{k: v for k, v in options.items() if v is not None})
    seconds_total = time.perf_counter() - t0
    clients = list(clients) if clients is not None else [u.client for u in updates]
    targets: list[InversionTarget] = []
    origs, recons = [], []
    for rec, records, client in zip(recs, originals, clients, strict=True):
        truth = records.pixels()
        sc = image_scores(rec.pixels.detach().cpu(), truth)
        base = trivial_baselines(truth, dataset_mean)
        perm = sc["perm"]
        labels = rec.labels
        for j in range(len(truth)):
            rl = None
            if labels is not None and len(labels) == len(rec.pixels):
                rl = int(labels[perm[j]])
            p, s = float(sc["psnr"][j]), float(sc["ssim"][j])
            targets.append(
                InversionTarget(
                    index=int(records.indices[j]),
                    label=int(records.labels[j]),
                    recovered_label=rl,
                    psnr=p,
                    ssim=s,
                    mse=float(sc["mse"][j]),
                    baseline_psnr=float(base[j]),
                    rebuilt=is_rebuilt(p, s, float(base[j])),
                    seconds=rec.seconds / max(1, len(truth)),
                    client=client,
                )
            )
        origs.append(truth)
        recons.append(rec.pixels.detach().cpu()[perm])
    return ScoredInversion(
        targets=targets,
        summary=InversionSummary.of(targets, seconds_total),
        originals=torch.cat(origs),
        reconstructions=torch.cat(recons),
        recs=list(recs),
        label_method=getattr(recs[0], "label_method", "none") if recs else "none",
        notes=sorted({n for r in recs if (n := (getattr(r, "extras", None) or {}).get("note"))}),
    )


def realism_card(
    update: ClientUpdate,
    kind: str,
    threat: ThreatModel,
    records: int,
    local_epochs: int | None = None,
    local_batch_size: int | None = None,
    beyond_server: Sequence[str] = (),
) -> Realism:
    """What the server received, what it was granted, how the model ran, and what the attack used beyond an
    honest server's view."""
    has_bn = any("running_mean" in k for k in update.global_state)
    granted = [g for g in ("num_samples", "local_steps", "local_lr", "batch_size", "labels") if getattr(threat, g)]
    return Realism(
        update=kind,  # type: ignore[arg-type]
        received=update.kind,
        records_per_update=records,
        local_steps=update.local_steps if update.kind == "delta" else None,
        local_epochs=local_epochs,
        local_batch_size=local_batch_size,
        num_clients=update.num_clients,
        granted=granted,
        model_mode="train" if update.train_mode else "eval",
        bn_prior=(False if has_bn else None),  # True only where an attack reports using the running statistics
        beyond_server=list(beyond_server),
        identifiable=bound.sentence() if (bound := for_update(update, records)) is not None else None,
    )
