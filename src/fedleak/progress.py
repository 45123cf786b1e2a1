"""Progress for long work, torch-free and usable from any layer: a rich bar with elapsed time and ETA on a
terminal, at most a few plain lines on stderr otherwise (CI, pipes).

    >>> list(progress(range(3), 3, "steps", plain_lines=0))
    [0, 1, 2]
"""

from __future__ import annotations

import contextlib
import sys
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
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        with Progress(*columns, transient=True) as bar:
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


@contextlib.contextmanager
def progress_bar(label: str) -> Iterator[OnProgress]:
    """A callback ``(done, total, label)`` for library code that reports its own progress (inversion iterations,
    reference models): on a terminal a bar with elapsed time and ETA; elsewhere nothing (logs stay clean).

        >>> with progress_bar("steps") as report:
        ...     report(1, 2, "steps")
    """
    if not is_terminal():
        yield lambda done, total, what: None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=None)

        def report(done: int, total: int, what: str) -> None:
            bar.update(task, completed=done, total=total, description=what or label)

        yield report
