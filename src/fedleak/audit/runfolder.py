"""A resumable run folder: each stage's result is a JSON file written atomically when the stage completes, so a
run killed at any point and started again with ``resume=True`` skips the finished stages and redoes only the
interrupted one. Each stage seeds its own random state, so a resumed run gives the same numbers as a clean run.

    >>> import tempfile
    >>> rf = RunFolder(tempfile.mkdtemp(), config_text="seed = 0\\n", resume=False)
    >>> rf.stage("double", lambda: {"x": 2})
    {'x': 2}
    >>> rf.stage("double", lambda: {"x": 3})   # done already: not run again
    {'x': 2}
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from fedleak.errors import FedleakInputError
from fedleak.runio import atomic_write_json, atomic_write_text, check_out_dir, read_json


@contextlib.contextmanager
def stage_progress(name: str) -> Iterator[None]:
    """A live progress line for one stage on a terminal (rich); one plain line when it ends otherwise."""
    t0 = time.perf_counter()
    if sys.stderr.isatty():
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), transient=True) as bar:
            bar.add_task(f"stage {name}", total=None)
            yield
    else:
        yield
    print(f"stage {name} done in {time.perf_counter() - t0:.1f} s", flush=True)  # a log line: stdout


def damaged(path: Path, err: Exception) -> FedleakInputError:
    """The one line for a run-folder file that cannot be read back (a run killed while the disk filled, a file
    edited by hand): which file, and what mends it."""
    return FedleakInputError(
        f"{path} is damaged ({type(err).__name__}); delete it to redo that stage with --resume, or start a fresh run "
        "in a new --out folder"
    )


def stage_seed(base: int, name: str) -> int:
    return (base * 1_000_003 + int(hashlib.sha1(name.encode()).hexdigest()[:8], 16)) % (2**31 - 1)


class RunFolder:
    def __init__(self, path: str | Path, config_text: str, resume: bool, seed: int = 0) -> None:
        self.path = Path(path)
        self.seed = seed
        self.stages = self.path / "stages"
        cfg = self.path / "config.toml"
        check_out_dir(self.path)
        if resume:
            if not cfg.exists():
                raise FedleakInputError(f"--resume: {self.path} holds no started run; drop --resume to start one")
            if cfg.read_text() != config_text:
                raise FedleakInputError(
                    f"--resume: {self.path} was started with a different config; use a new --out or the same config"
                )
        elif self.stages.exists() and any(self.stages.iterdir()):
            raise FedleakInputError(
                f"--out {self.path} already holds a run; pass --resume to continue it or choose another folder"
            )
        self.stages.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cfg, config_text)

    def done(self, name: str) -> bool:
        return (self.stages / f"{name}.json").exists()

    def stage(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` once: its JSON result is stored, and returned from the store on later calls or resumes."""
        out = self.stages / f"{name}.json"
        if out.exists():
            try:
                return read_json(out)
            except (ValueError, UnicodeDecodeError) as e:
                raise damaged(out, e) from None
        seed = stage_seed(self.seed, name)
        random.seed(seed)
        try:
            import numpy as np
            import torch

            torch.manual_seed(seed)
            np.random.seed(seed)
        except ImportError:  # pragma: no cover
            pass
        with stage_progress(name):
            result = fn()
        atomic_write_json(out, result)
        return read_json(out)

    def file(self, name: str) -> Path:
        return self.path / name
