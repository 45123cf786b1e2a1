"""Reference models for membership attacks, trained as Ray tasks: the K models are split into contiguous
chunks, and each chunk runs the vectorised trainer
(:func:`fedleak.attacks.membership.references.train_references`) inside one Ray task. Model k's seed depends
only on (seed, k), so any chunking, on one machine or a cluster, gives the same models (up to float noise) and
the same attack scores as the in-process trainer.

    from fedleak.attacks.membership import balanced_masks
    from fedleak.flower import train_references_on_ray
    refs = train_references_on_ray("mlp", data.spec, x, y, balanced_masks(64, len(x)), TrainSpec(epochs=20),
                                   seed=0, chunks=8, address="auto")   # "auto": the cluster of `ray start`
    scores = fedleak.attacks.membership_scores(target, records, "lira", references=refs)

``address=None`` starts a local Ray instance (and stops it afterwards unless ``keep_ray``); a running Ray
session in this process is reused as it is. On a cluster every node needs the same Python environment with
fedleak installed (the tasks import it); the data travel with the tasks through Ray's object store.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from fedleak.data.dataset import DataSpec
from fedleak.errors import FedleakInputError
from fedleak.fl.local import TrainSpec


def chunk_bounds(k: int, chunks: int) -> list[tuple[int, int]]:
    """Split K models into ``chunks`` contiguous, nearly equal ranges.

    >>> chunk_bounds(10, 3)
    [(0, 4), (4, 7), (7, 10)]
    """
    chunks = max(1, min(chunks, k))
    base, extra = divmod(k, chunks)
    out, a = [], 0
    for i in range(chunks):
        b = a + base + (1 if i < extra else 0)
        out.append((a, b))
        a = b
    return out


def _train_chunk(
    model_spec: str,
    data_spec: DataSpec,
    x: Tensor,
    y: Tensor,
    masks: Tensor,
    train_spec: TrainSpec,
    seed: int,
    first: int,
    checkpoint_dir: str | None,
    train_mode: bool,
    pool_ids: Tensor | None,
    threads: int,
) -> Any:
    """One Ray task: the vectorised trainer on models first .. first + len(masks) - 1."""
    from fedleak.attacks.membership.references import train_references

    if threads:
        torch.set_num_threads(threads)
    return train_references(
        model_spec,
        data_spec,
        x,
        y,
        masks,
        train_spec,
        seed=seed,
        device="cpu",
        checkpoint_dir=checkpoint_dir,
        vectorised=True,
        first=first,
        train_mode=train_mode,
        pool_ids=pool_ids,
    )


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise FedleakInputError("--backend ray needs Ray: pip install 'fedleak[flower]' (or 'ray')") from None
    return ray


def train_references_on_ray(
    model_spec: str,
    data_spec: DataSpec,
    x: Tensor,
    y: Tensor,
    masks: Tensor,
    train_spec: TrainSpec,
    seed: int = 0,
    *,
    chunks: int | None = None,
    address: str | None = None,
    num_cpus: int | None = None,
    task_cpus: float = 1.0,
    checkpoint_dir: str | Path | None = None,
    train_mode: bool = True,
    pool_ids: Tensor | None = None,
    keep_ray: bool = False,
    on_chunk: Callable[[int, int], None] | None = None,
) -> Any:
    """Train one reference model per row of ``masks`` (K, N) as Ray tasks; returns ``ReferenceModels`` equal
    (up to float noise) to ``train_references(model_spec, data_spec, x, y, masks, train_spec, seed)``.

    ``chunks``: how many tasks (default: one per CPU of the Ray cluster, at most K); ``address``: an existing
    cluster (``"auto"``, ``"ray://HEAD:10001"`` or ``"HEAD:6379"``), None for a local instance of
    ``num_cpus``;
    ``task_cpus``: CPUs each task reserves (its torch threads); ``checkpoint_dir``: a folder every node can
    reach (shared disk) to resume finished chunks.
    """
    from fedleak.attacks.membership.references import ReferenceModels

    masks = torch.as_tensor(masks, dtype=torch.bool).cpu()
    if masks.dim() != 2 or masks.shape[1] != len(x) or len(x) != len(y):
        raise FedleakInputError(f"masks must be (K, {len(x)}) for {len(x)} pool records, got {tuple(masks.shape)}")
    if task_cpus <= 0:
        raise FedleakInputError(f"task_cpus {task_cpus}: must be > 0")
    ray = _ray()
    started = False
    if not ray.is_initialized():
        init: dict[str, Any] = {
            "include_dashboard": False,
            "logging_level": logging.ERROR,
            "log_to_driver": False,
        }
        if address:
            init["address"] = address
        elif num_cpus:
            init["num_cpus"] = num_cpus
        try:
            ray.init(**init)
        except ConnectionError as e:
            raise FedleakInputError(
                f"--ray-address {address}: no Ray cluster there ({e}); start one with "
                "`ray start --head` or leave the address out for a local instance"
            ) from None
        started = True
    try:
        k = masks.shape[0]
        if chunks is None:
            chunks = max(1, int(ray.cluster_resources().get("CPU", 1) // task_cpus))
        bounds = chunk_bounds(k, chunks)
        remote = ray.remote(num_cpus=task_cpus)(_train_chunk)
        x_ref, y_ref = ray.put(x.cpu()), ray.put(y.cpu())
        ckpt = None if checkpoint_dir is None else str(checkpoint_dir)
        pending = {
            remote.remote(
                model_spec,
                data_spec,
                x_ref,
                y_ref,
                masks[a:b],
                train_spec,
                seed,
                a,
                ckpt,
                train_mode,
                pool_ids,
                max(1, int(task_cpus)),
            ): i
            for i, (a, b) in enumerate(bounds)
        }
        parts: list[Any] = [None] * len(bounds)
        done = 0
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                i = pending.pop(ref)
                parts[i] = ray.get(ref)
                done += bounds[i][1] - bounds[i][0]
                if on_chunk is not None:
                    on_chunk(done, k)
    finally:
        if started and not keep_ray:
            ray.shutdown()
    refs = parts[0] if len(parts) == 1 else ReferenceModels.concat(parts)
    refs.pool_ids = pool_ids
    return refs


def ray_reference_trainer(address: str | None = None, chunks: int | None = None, **options: Any) -> Callable:
    """A drop-in for ``train_references`` (same positional arguments) that trains on Ray; for the membership
    attacks' ``--backend ray``. Options the local trainer has but Ray does not need (``device``,
    ``vectorised``, ``chunk``, ``first``) are accepted and ignored."""

    def train(
        model_spec: str,
        data_spec: DataSpec,
        x: Tensor,
        y: Tensor,
        masks: Tensor,
        train_spec: TrainSpec,
        seed: int = 0,
        device: Any = None,
        checkpoint_dir: Any = None,
        vectorised: bool = True,
        *,
        train_mode: bool = True,
        pool_ids: Tensor | None = None,
        on_chunk: Any = None,
        **_: Any,
    ) -> Any:
        return train_references_on_ray(
            model_spec,
            data_spec,
            x,
            y,
            masks,
            train_spec,
            seed,
            chunks=chunks,
            address=address,
            checkpoint_dir=checkpoint_dir,
            train_mode=train_mode,
            pool_ids=pool_ids,
            on_chunk=on_chunk,
            **options,
        )

    return train
