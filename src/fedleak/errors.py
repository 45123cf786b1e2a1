"""The one error type for bad input: the CLI prints its message as one line and exits 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class FedleakInputError(ValueError):
    """Input the user can fix (a spec, a path, a file, an option). The message says what and how."""


def suggest(word: str, choices: Iterable[str]) -> str:
    """' (did you mean X?)' for the nearest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class NonFiniteError(FedleakInputError):
    """NaN or infinite numbers where a score or a measurement is expected (diverged training, NaN input):
    never turned into a result."""
