"""The server's views on disk: one safetensors file per :class:`~fedleak.fl.ClientUpdate` (payload, global state,
buffers and labels as tensors; everything else as JSON in the file's metadata), so that an audited Flower run
keeps no growing list of models in memory and the attacks can run later, from the files
(``fedleak audit-flower RUN_DIR``).

    >>> import tempfile, torch
    >>> from fedleak.fl.update import ClientUpdate
    >>> u = ClientUpdate("mlp", {"w": torch.ones(2)}, {"w": torch.zeros(2)}, "delta", 4, 1, 0.1, 4, None, round=2)
    >>> p = save_view(u, Path(tempfile.mkdtemp()) / "v.safetensors")
    >>> v = load_view(p)
    >>> (v.round, v.kind, v.num_samples, v.payload["w"].tolist())
    (2, 'delta', 4, [0.0, 0.0])
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from fedleak.data.dataset import DataSpec
from fedleak.errors import FedleakInputError
from fedleak.fl.update import ClientUpdate
from fedleak.runio import atomic_write_bytes

_TENSORS = ("global_state", "payload", "buffers")
_PLAIN = ("model", "kind", "num_samples", "local_steps", "local_lr", "batch_size", "client", "round", "num_clients")


def _jsonable(v: object) -> object:
    try:
        json.dumps(v)
        return v
    except TypeError:
        return repr(v)


def save_view(update: ClientUpdate, path: str | Path) -> Path:
    """Write ``update`` to ``path`` (safetensors); returns the path."""
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}
    for part in _TENSORS:
        for k, v in (getattr(update, part) or {}).items():
            tensors[f"{part}/{k}"] = v.detach().cpu().contiguous()
    if update.labels is not None:
        tensors["labels"] = update.labels.detach().cpu().contiguous()
    meta = {k: getattr(update, k) for k in _PLAIN}
    meta["train_mode"] = update.train_mode
    meta["has_buffers"] = update.buffers is not None
    meta["data_spec"] = dataclasses.asdict(update.data_spec) if update.data_spec is not None else None
    meta["extras"] = {k: _jsonable(v) for k, v in update.extras.items()}
    return atomic_write_bytes(path, save(tensors, metadata={"fedleak_view": json.dumps(meta)}))


def load_view(path: str | Path) -> ClientUpdate:
    """Read a view written by :func:`save_view`."""
    from safetensors import safe_open

    p = Path(path)
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = json.loads((f.metadata() or {})["fedleak_view"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no iterator)
    except (OSError, KeyError, ValueError, Exception) as e:  # safetensors raises its own SafetensorError
        raise FedleakInputError(f"{p} is not a fedleak view file ({type(e).__name__}); rerun the audited app") from None
    parts = {part: {k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith(part + "/")} for part in _TENSORS}
    ds = meta.pop("data_spec")
    spec = None
    if ds is not None:
        spec = DataSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in ds.items()})
    has_buffers = meta.pop("has_buffers")
    return ClientUpdate(
        **{k: meta[k] for k in _PLAIN},
        global_state=parts["global_state"],
        payload=parts["payload"],
        buffers=parts["buffers"] if has_buffers else None,
        labels=tensors.get("labels"),
        data_spec=spec,
        train_mode=meta["train_mode"],
        extras=meta["extras"],
    )
