"""Progress for long work, torch-free and usable from any layer: a rich bar with elapsed time and ETA on a
terminal, at most a few plain lines on stderr otherwise (CI, pipes).

    >>> list(progress(range(3), 3, "steps", plain_lines=0))
    [0, 1, 2]
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

OnProgress = Callable[[int, int, str], None]
"""A callback ``(done, total, label)`` that long-running library code may accept."""


def is_terminal() -> bool:
    return sys.stderr.isatty()


def progress(items: Iterable[T], total: int, label: str, plain_lines: int = 10) -> Iterator[T]:
    """Yield ``items``, showing a bar with ETA on a terminal, else at most ``plain_lines`` lines on stderr."""
    if is_terminal():
        from rich.progress import Progress

        with Progress(*_columns(), transient=True) as bar:
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


def _columns() -> tuple:
    from rich.progress import BarColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )


def _periodic_lines(label: str, every_s: float) -> OnProgress:
    last = [time.monotonic()]

    def report(done: int, total: int, what: str) -> None:
        now = time.monotonic()
        if now - last[0] >= every_s:
            last[0] = now
            print(f"{what or label}: {done}/{total}", file=sys.stderr, flush=True)

    return report


@contextlib.contextmanager
def progress_bar(label: str, every_s: float = 30.0) -> Iterator[OnProgress]:
    """A callback ``(done, total, label)`` for library code that reports its own progress (inversion iterations,
    reference models): on a terminal a bar with elapsed time and ETA, shown from the first report on; elsewhere
    (CI, pipes) one plain line on stderr every ``every_s`` seconds, so short work prints nothing.

        >>> with progress_bar("steps") as report:
        ...     report(1, 2, "steps")
    """
    if not is_terminal():
        yield _periodic_lines(label, every_s)
        return
    from rich.progress import Progress

    state: dict = {}

    def report(done: int, total: int, what: str) -> None:
        if "bar" not in state:
            state["bar"] = Progress(*_columns(), transient=True)
            state["bar"].start()
            state["task"] = state["bar"].add_task(what or label, total=total)
        state["bar"].update(state["task"], completed=done, total=total, description=what or label)

    try:
        yield report
    finally:
        if "bar" in state:
            state["bar"].stop()
