"""What a membership attack is given: black-box access to the target, the candidate records, the attacker's
population data, and how to train reference models like the target (or reference models already trained).

The context computes each thing once (target outputs, reference models and their outputs), so that several
attacks run on one context share the work:

    >>> import fedleak
    >>> from fedleak.attacks.membership import MembershipContext, Records, membership_scores
    >>> data = fedleak.data.load("digits")
    >>> target = fedleak.models.build("mlp", data.spec, seed=0)
    >>> ctx = MembershipContext(target, Records.of(data.subset(range(20))), data_spec=data.spec)
    >>> membership_scores(target, None, "loss", context=ctx).shape
    torch.Size([20])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fedleak.attacks.membership.references import ReferenceModels, balanced_masks, train_references
from fedleak.data.dataset import Dataset, DataSpec
from fedleak.device import resolve_device
from fedleak.errors import FedleakInputError
from fedleak.fl.local import TrainSpec, predict_logits


@dataclass
class Records:
    """Labelled records as the model sees them; ``ids`` name them (dataset indices) so reference models
    that trained on some of them can be matched."""

    x: Tensor
    y: Tensor
    ids: Tensor | None = None

    def __len__(self) -> int:
        return len(self.y)

    @classmethod
    def of(cls, obj: Any) -> Records:
        """From a Dataset, an (x, y) pair or (x, y, ids), or Records."""
        if isinstance(obj, Records):
            return obj
        if isinstance(obj, Dataset):
            if obj.spec.modality == "text" and obj.labels.dim() != 1:
                raise FedleakInputError(f"{obj.spec.name}: membership inference needs one class label per record")
            x, y = obj.tensors()
            return cls(x, y, obj.indices.clone())
        if isinstance(obj, (tuple, list)) and len(obj) in (2, 3):
            return cls(*obj)
        raise FedleakInputError("records: give a fedleak Dataset, an (x, y) pair of tensors, or Records")

    def cat(self, other: Records) -> Records:
        ids = None if self.ids is None or other.ids is None else torch.cat([self.ids, other.ids])
        return Records(torch.cat([self.x, other.x]), torch.cat([self.y, other.y]), ids)


LogitFn = Callable[[Tensor], Tensor]


def logit_fn(target: nn.Module | LogitFn) -> LogitFn:
    """Black-box access: a function from inputs to logits (eval mode for modules)."""
    if isinstance(target, nn.Module):
        return lambda x: predict_logits(target, x)
    return target


@dataclass
class MembershipContext:
    """Everything membership attacks read, computed lazily and once.

    ``references`` is either a number K of reference models to train when an attack needs them, or
    :class:`ReferenceModels` already trained (their ``pool_ids`` tell which of them saw each record).
    Reference models train on halves of records + population (each record IN for half of the models).
    """

    target: nn.Module | LogitFn
    records: Records
    population: Records | None = None
    references: int | ReferenceModels = 16
    model_spec: str | None = None
    data_spec: DataSpec | None = None
    train_spec: TrainSpec = field(default_factory=TrainSpec)
    seed: int = 0
    device: str | torch.device | None = None
    checkpoint_dir: str | Path | None = None
    vectorised: bool = True
    chunk: int | None = None
    on_progress: Callable[[str, int, int], None] | None = None
    reference_trainer: Callable[..., ReferenceModels] = train_references  # e.g. a Ray drop-in
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.records = Records.of(self.records)
        if self.population is not None:
            self.population = Records.of(self.population)
        if self.model_spec is None and isinstance(self.target, nn.Module):
            self.model_spec = getattr(self.target, "fedleak_spec", None)
        if self.device is None:
            self.device = next(self.target.parameters()).device if isinstance(self.target, nn.Module) else "cpu"
        self.device = resolve_device(self.device)

    # -- target outputs
    def _memo(self, key: str, fn: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    def query(self, x: Tensor) -> Tensor:
        """Logits of the target (the black box) on x."""
        return logit_fn(self.target)(x.to(self.device)).float()

    def target_logits(self) -> Tensor:
        return self._memo("t_rec", lambda: self.query(self.records.x))

    def target_population_logits(self) -> Tensor:
        return self._memo("t_pop", lambda: self.query(self.need_population("this attack").x))

    def need_population(self, who: str, least: int = 2) -> Records:
        if self.population is None or len(self.population) < least:
            raise FedleakInputError(
                f"{who} needs population data (at least {least} records the target never saw); "
                "pass population=... (the CLI keeps the records beyond 2 x --members)"
            )
        return self.population

    # -- reference models
    def need_training_info(self, who: str) -> tuple[str, DataSpec]:
        if self.model_spec is None or self.data_spec is None:
            raise FedleakInputError(
                f"{who} trains reference models: pass model_spec= and data_spec= (or a target "
                "built with fedleak.models.build and Dataset records)"
            )
        return self.model_spec, self.data_spec

    def train(
        self,
        x: Tensor,
        y: Tensor,
        masks: Tensor,
        label: str,
        seed_offset: int = 0,
        pool_ids: Tensor | None = None,
    ) -> ReferenceModels:
        """Train one model per mask row on (x, y), like the target was trained (vectorised, checkpointed)."""
        spec, dspec = self.need_training_info(label)
        ckpt = None if self.checkpoint_dir is None else Path(self.checkpoint_dir) / label
        report = None
        if self.on_progress is not None:
            report = lambda done, total: self.on_progress(label, done, total)  # noqa: E731
        return self.reference_trainer(
            spec,
            dspec,
            x,
            y,
            masks,
            self.train_spec,
            seed=self.seed + seed_offset,
            device=self.device,
            checkpoint_dir=ckpt,
            vectorised=self.vectorised,
            chunk=self.chunk,
            pool_ids=pool_ids,
            on_chunk=report,
        )

    def reference_count(self, who: str, least: int = 2) -> int:
        k = self.references if isinstance(self.references, int) else self.references.count
        if k < least:
            raise FedleakInputError(
                f"{who} needs at least {least} reference models (IN/OUT pairs); "
                f"got {k}: pass --references {max(least, 16)}"
            )
        return k

    def reference_set(self, online: bool = True) -> tuple[ReferenceModels, Tensor, Tensor | None]:
        """(models, in-mask over records (K, n), in-mask over the population (K, m) or None).

        The models train on halves of records + population, so each record is IN for half of them; offline
        attacks use, per record, only the models that never saw it."""
        if not isinstance(self.references, int):
            refs = self.references
            return self._memo(
                "refs",
                lambda: (
                    refs,
                    self._in(refs, self.records),
                    None if self.population is None else self._in(refs, self.population),
                ),
            )
        return self._memo("refs", self._train_set)

    def _in(self, refs: ReferenceModels, recs: Records) -> Tensor:
        if recs.ids is None:
            return torch.zeros(refs.count, len(recs), dtype=torch.bool)
        return refs.membership(recs.ids)

    def _train_set(self) -> tuple[ReferenceModels, Tensor, Tensor | None]:
        k = self.reference_count("reference models")
        n = len(self.records)
        pool = self.records if self.population is None else self.records.cat(self.population)
        masks = balanced_masks(k, len(pool), seed=self.seed + 1)
        refs = self.train(pool.x, pool.y, masks, "references", 0, pool.ids)
        return refs, masks[:, :n], (masks[:, n:] if self.population is not None else None)

    def reference_logits(self, online: bool = True, which: str = "records") -> Tensor:
        """(K, n, C) logits of the reference models on the records (or the population)."""
        refs, _, _ = self.reference_set(online)
        recs = self.records if which == "records" else self.need_population("this attack")
        return self._memo(f"rl_{which}", lambda: refs.logits(recs.x).float())
