"""Membership inference: was a record in a model's training set? Every attack turns (model access, records)
into one score per record, higher = more likely a member, so all attacks share one evaluation
(:func:`fedleak.metrics.roc_report`).

    >>> import fedleak
    >>> from fedleak.fl import SGDTrainer, TrainSpec
    >>> data = fedleak.data.load("digits")
    >>> members, rest = data.subset(range(100)), data.subset(range(100, 300))
    >>> target = fedleak.models.build("mlp", data.spec, seed=0)
    >>> import torch
    >>> _ = SGDTrainer().train(target, *members.tensors(), TrainSpec(epochs=30), torch.Generator())
    >>> scores = membership_scores(target, data.subset(range(200)), "loss")
    >>> fedleak.metrics.roc_report(scores, [True] * 100 + [False] * 100)["auc"] > 0.6
    True

Attacks (``ATTACKS``): thresholds on loss / confidence / entropy / modified entropy (``-class`` for the
class-conditional ones), ``shokri`` (shadow models), ``lira`` / ``lira-offline``, ``rmia`` / ``rmia-offline``.
Reference and shadow models train vectorised (:mod:`.references`); one client's update is attacked with
:func:`update_scores` (:mod:`.federated`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fedleak.attacks.membership import lira, quantile, rmia, shokri, threshold  # noqa: F401  (they register)
from fedleak.attacks.membership.context import MembershipContext, Records, logit_fn
from fedleak.attacks.membership.federated import (
    FEDERATION_CALIBRATIONS,
    UPDATE_SIGNALS,
    federation_scores,
    update_scores,
)
from fedleak.attacks.membership.references import ReferenceModels, balanced_masks, train_references
from fedleak.attacks.membership.registry import ATTACKS, AttackEntry, attack
from fedleak.attacks.membership.shadowdata import SHADOW_DATA
from fedleak.data.dataset import Dataset, DataSpec
from fedleak.fl.local import TrainSpec

__all__ = [
    "ATTACKS",
    "FEDERATION_CALIBRATIONS",
    "SHADOW_DATA",
    "UPDATE_SIGNALS",
    "AttackEntry",
    "MembershipContext",
    "Records",
    "ReferenceModels",
    "attack",
    "balanced_masks",
    "federation_scores",
    "logit_fn",
    "membership_scores",
    "train_references",
    "update_scores",
]


def membership_scores(
    target: nn.Module | Any,
    records: Dataset | Records | tuple[Tensor, Tensor] | None,
    attack: str = "lira",
    *,
    population: Dataset | Records | tuple[Tensor, Tensor] | None = None,
    references: int | ReferenceModels = 16,
    model_spec: str | None = None,
    data_spec: DataSpec | None = None,
    train_spec: TrainSpec | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    checkpoint_dir: str | Path | None = None,
    vectorised: bool = True,
    context: MembershipContext | None = None,
    **options: Any,
) -> Tensor:
    """One score per record (higher = more likely a member) from the named attack.

    ``target`` is a model (or a function from inputs to logits: black-box access); ``population`` are
    records the target never saw (for RMIA, Shokri, class-conditional thresholds, reference training);
    ``references`` is a number K of reference/shadow models to train like the target (``train_spec``) or
    :class:`ReferenceModels` already trained. Pass ``context`` to share target queries and reference models
    between attacks. Attack options (e.g. ``variance="global"``, ``shadow_data="synthetic"``, ``gamma=2``)
    go through ``**options``.
    """
    entry = ATTACKS.get(attack)
    if context is None:
        if data_spec is None and isinstance(records, Dataset):
            data_spec = records.spec
        context = MembershipContext(
            target,
            records,
            population,
            references,
            model_spec,
            data_spec,
            train_spec or TrainSpec(),
            seed,
            device,
            checkpoint_dir,
            vectorised,
        )
    return entry.fn(context, **options).detach()
