"""The in-memory dataset record every loader returns.

Images are kept as ``uint8`` (N, C, H, W) when they came from image files (compact: CIFAR-10 is 150 MB),
or as ``float32`` in [0, 1]; tables as ``float32`` (N, F). Models see normalised float tensors
(``(x - mean) / std`` per channel or feature); metrics undo that with :meth:`Dataset.to_pixels`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from fedleak.errors import FedleakInputError

Modality = Literal["image", "table", "text"]


@dataclass(frozen=True)
class DataSpec:
    """What a model and an attack need to know about a dataset, without its records."""

    name: str
    modality: Modality
    shape: tuple[int, ...]  # one record: (C, H, W) for images, (F,) for tables, (L,) for token ids
    num_classes: int
    class_names: tuple[str, ...]
    mean: tuple[float, ...]  # per channel (images) or per feature (tables)
    std: tuple[float, ...]
    vocab_size: int | None = None  # text only

    def _stat(self, values: tuple[float, ...], like: Tensor) -> Tensor:
        t = torch.tensor(values, dtype=like.dtype, device=like.device)
        if self.modality == "image":
            return t.view(-1, 1, 1)
        return t

    def normalize(self, pixels: Tensor) -> Tensor:
        """[0, 1] pixels (or raw table values) -> what the model sees."""
        if self.modality == "text":
            return pixels
        return (pixels - self._stat(self.mean, pixels)) / self._stat(self.std, pixels)

    def denormalize(self, x: Tensor) -> Tensor:
        """Model input -> [0, 1] pixels (or raw table values)."""
        if self.modality == "text":
            return x
        return x * self._stat(self.std, x) + self._stat(self.mean, x)


@dataclass
class Dataset:
    """Records in a fixed, documented order: index i is the same record on every machine.

    ``raw`` holds uint8 or [0, 1] float images, raw float table rows, or int64 token ids;
    ``labels`` int64 class indices.
    """

    spec: DataSpec
    raw: Tensor
    labels: Tensor
    indices: Tensor = field(default=None)  # type: ignore[assignment]  # original index of each record
    extras: dict = field(default_factory=dict)  # loader-specific (e.g. a tokenizer for text)

    def __post_init__(self) -> None:
        if self.indices is None:
            self.indices = torch.arange(len(self.labels))
        if len(self.raw) != len(self.labels):
            raise FedleakInputError(
                f"{self.spec.name}: {len(self.raw)} records but {len(self.labels)} labels; give one label per record"
            )

    def __len__(self) -> int:
        return len(self.labels)

    def pixels(self, idx: Sequence[int] | Tensor | None = None) -> Tensor:
        """Records in [0, 1] pixel space (images) or raw values (tables), as float32."""
        raw = self.raw if idx is None else self.raw[torch.as_tensor(idx, dtype=torch.long)]
        if raw.dtype == torch.uint8:
            return raw.float().div_(255.0)
        if self.spec.modality == "text":
            return raw
        return raw.float()

    def inputs(self, idx: Sequence[int] | Tensor | None = None) -> Tensor:
        """Records as the model sees them (normalised float tensors, or token ids for text)."""
        return self.spec.normalize(self.pixels(idx))

    def tensors(self, idx: Sequence[int] | Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(inputs, labels) for the given positions (all records when None)."""
        y = self.labels if idx is None else self.labels[torch.as_tensor(idx, dtype=torch.long)]
        return self.inputs(idx), y

    def to_pixels(self, x: Tensor) -> Tensor:
        """Undo normalisation of model inputs (e.g. a reconstruction) and clamp to [0, 1]."""
        out = self.spec.denormalize(x)
        return out.clamp(0, 1) if self.spec.modality == "image" else out

    def subset(self, positions: Sequence[int] | Tensor) -> Dataset:
        """A dataset of the records at these positions (positions in this dataset, not original indices)."""
        pos = torch.as_tensor(positions, dtype=torch.long)
        if len(pos) and (int(pos.min()) < 0 or int(pos.max()) >= len(self)):
            raise FedleakInputError(
                f"{self.spec.name}: index out of range (the dataset has {len(self)} records, 0..{len(self) - 1})"
            )
        return Dataset(self.spec, self.raw[pos], self.labels[pos], self.indices[pos], self.extras)

    def split(self, fraction: float, seed: int = 0) -> tuple[Dataset, Dataset]:
        """A seeded random split into (first, second) with ``fraction`` of the records in the second."""
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(len(self), generator=g)
        n_second = int(round(len(self) * fraction))
        return self.subset(perm[n_second:].sort().values), self.subset(perm[:n_second].sort().values)


def image_spec(name: str, raw: Tensor, class_names: Sequence[str], stats_from: Tensor | None = None) -> DataSpec:
    """A DataSpec for (N, C, H, W) images with per-channel mean/std measured on the data."""
    x = stats_from if stats_from is not None else raw
    x = x.float().div(255.0) if x.dtype == torch.uint8 else x.float()
    sample = x[: min(len(x), 20000)]
    mean = sample.mean(dim=(0, 2, 3))
    std = sample.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return DataSpec(
        name=name,
        modality="image",
        shape=tuple(raw.shape[1:]),
        num_classes=len(class_names),
        class_names=tuple(class_names),
        mean=tuple(round(float(m), 4) for m in mean),
        std=tuple(round(float(s), 4) for s in std),
    )


def table_spec(name: str, raw: Tensor, class_names: Sequence[str]) -> DataSpec:
    """A DataSpec for (N, F) tables, standardised per feature."""
    mean = raw.float().mean(0)
    std = raw.float().std(0).clamp_min(1e-6)
    return DataSpec(
        name=name,
        modality="table",
        shape=(raw.shape[1],),
        num_classes=len(class_names),
        class_names=tuple(class_names),
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
    )
