"""A cache folder for decoded datasets: ``$FEDLEAK_CACHE`` or ``~/.cache/fedleak``.

Entries are ``.npz`` files (no pickles) keyed by the source's absolute path, size and modification time,
so a changed file is decoded again.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np

from fedleak.runio import atomic_write_bytes

FORMAT_VERSION = "1"


def cache_dir() -> Path:
    root = os.environ.get("FEDLEAK_CACHE") or Path.home() / ".cache" / "fedleak"
    return Path(root)


def cache_key(kind: str, source: Path) -> str:
    st = source.stat()
    ident = f"{FORMAT_VERSION}|{kind}|{source.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    return f"{kind}-{hashlib.sha1(ident.encode()).hexdigest()[:16]}"


def load_arrays(key: str) -> dict[str, np.ndarray] | None:
    path = cache_dir() / f"{key}.npz"
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception:  # a damaged cache entry is rebuilt, not trusted
        path.unlink(missing_ok=True)
        return None


def save_arrays(key: str, arrays: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    try:
        atomic_write_bytes(cache_dir() / f"{key}.npz", buf.getvalue())
    except OSError:
        pass  # a read-only home is no reason to fail: we just decode again next time
