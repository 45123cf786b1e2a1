"""Run folders: atomic writes (write to a temporary file, then rename) so that an interrupted run never
leaves a half-written file, and JSON that turns tensors and numpy scalars into plain numbers."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if hasattr(obj, "tolist"):  # numpy arrays/scalars, torch tensors
        return _plain(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else (1e308 if obj > 0 else -1e308)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write to a temporary file beside ``path``, then rename it over ``path`` (permissions as open() gives)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(_plain(obj), indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def check_out_dir(path: str | Path) -> Path:
    """Check, without creating anything, that ``path`` can become a run folder: no part of it is a file, and the
    nearest existing folder above it accepts new files (a probe folder is made there and removed at once).
    FedleakInputError with one line otherwise."""
    from fedleak.errors import FedleakInputError

    p = Path(path)
    if p.exists() and not p.is_dir():
        raise FedleakInputError(f"--out {p} is a file; give a folder")
    parent = p
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise FedleakInputError(f"--out {p}: {parent} is a file, so no folder can be made under it; give another path")
    try:
        probe = tempfile.mkdtemp(prefix=".fedleak-probe-", dir=parent)
        os.rmdir(probe)
    except OSError as e:
        raise FedleakInputError(
            f"--out {p}: cannot write under {parent} ({e.strerror}); give a writable folder"
        ) from None
    return p
