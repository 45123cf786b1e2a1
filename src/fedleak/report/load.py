"""Reading a run folder: ``results.json`` (checked enough to say what is wrong) and the PNGs beside it,
turned into ``data:`` URIs so that the report is one self-contained file."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from fedleak.errors import FedleakInputError, suggest

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_PICTURE_BYTES = 32 * 2**20
WRITERS = "fedleak audit, demo, invert or mia"


def load_results(run_dir: Path, kinds: tuple[str, ...]) -> dict[str, Any]:
    """``run_dir/results.json`` as a dict whose ``kind`` is one of ``kinds``; FedleakInputError otherwise."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        what = "is a file" if run_dir.exists() else "does not exist"
        raise FedleakInputError(f"{run_dir} {what}; give a run folder written by {WRITERS}")
    path = run_dir / "results.json"
    if not path.is_file():
        raise FedleakInputError(f"{run_dir} has no results.json; give a run folder written by {WRITERS}")
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FedleakInputError(
            f"{path} is not valid JSON ({e}); rerun the command that wrote it (an audit: with --resume)"
        ) from None
    if not isinstance(results, dict):
        raise FedleakInputError(
            f"{path} holds a JSON {type(results).__name__}, not an object; rerun the command that wrote it"
        )
    kind = results.get("kind")
    if not isinstance(kind, str) or kind not in kinds:
        raise FedleakInputError(
            f"{path} has kind {kind!r}{suggest(str(kind), kinds)}; the report reads kinds: {', '.join(kinds)}"
        )
    return results


def png_data_uri(data: bytes) -> str:
    """``data:image/png;base64,...`` for PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def picture(run_dir: Path, name: Any) -> str | None:
    """The PNG ``name`` (relative to ``run_dir``) as a data URI, or None when it is absent, not a PNG, too
    big, or outside the run folder (a results.json never makes the report read other files)."""
    if not isinstance(name, str) or not name:
        return None
    root = Path(run_dir).resolve()
    path = (root / name).resolve()
    if not path.is_relative_to(root) or not path.is_file() or path.stat().st_size > MAX_PICTURE_BYTES:
        return None
    data = path.read_bytes()
    return png_data_uri(data) if data.startswith(PNG_SIGNATURE) else None
