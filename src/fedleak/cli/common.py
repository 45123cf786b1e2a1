"""What the commands share: output folders that are never half-written, progress that is quiet in pipes,
and the parsing of comma lists."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from fedleak.errors import FedleakInputError
from fedleak.runio import check_out_dir

T = TypeVar("T")


def out_dir(path: Path, resume: bool = False) -> Path:
    """Check that ``path`` can be a run folder (it or its nearest existing parent is a writable folder); it is
    created only when the first result is written."""
    return check_out_dir(path)


def int_list(text: str | None, option: str) -> list[int] | None:
    if text is None or not text.strip():
        return None
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise FedleakInputError(f"{option} {text!r}: give comma-separated integers, e.g. 0,5000,10000") from None


def is_terminal() -> bool:
    return sys.stderr.isatty()


def progress(items: Iterable[T], total: int, label: str, plain_lines: int = 10) -> Iterator[T]:
    """A rich progress bar on a terminal; otherwise (CI, pipes) at most ``plain_lines`` plain lines."""
    if is_terminal():
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            task = bar.add_task(label, total=total)
            for item in items:
                yield item
                bar.advance(task)
    else:
        every = max(1, total // plain_lines) if plain_lines else 0
        for i, item in enumerate(items, 1):
            yield item
            if every and (i % every == 0 or i == total):
                print(f"{label}: {i}/{total}", file=sys.stderr, flush=True)


def say(text: str) -> None:
    print(text, flush=True)
