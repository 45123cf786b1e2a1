"""Word-level and character-level tokenizers, fitted on a corpus.

Every fedleak tokenizer reserves id 0 for padding (``PAD``) and id 1 for an unknown token (``UNK``); the rest
of the vocabulary is the corpus' tokens in order of first appearance, so the same corpus always gives the
same ids.

    >>> tok = WordTokenizer.fit(["patient Maria Keller", "patient Ann Lee"])
    >>> tok.encode("patient Ann Keller", length=5)
    [2, 5, 4, 0, 0]
    >>> tok.decode([2, 5, 4, 0, 0])
    'patient Ann Keller'
    >>> CharTokenizer.fit(["ab"]).encode("ba")
    [3, 2]
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from fedleak.registry import Registry

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1


@dataclass(frozen=True)
class Tokenizer:
    """A fixed vocabulary: ``tokens[i]`` is the string of id ``i``. Subclasses split and join text."""

    tokens: tuple[str, ...]
    kind: str = "word"

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    @property
    def pad_id(self) -> int:
        return PAD_ID

    @property
    def index(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.tokens)}

    def split(self, text: str) -> list[str]:
        raise NotImplementedError

    def join(self, pieces: Sequence[str]) -> str:
        raise NotImplementedError

    @classmethod
    def fit(cls, corpus: Iterable[str]) -> Tokenizer:
        """The vocabulary of ``corpus``: PAD, UNK, then tokens in order of first appearance."""
        seen: dict[str, None] = {PAD: None, UNK: None}
        probe = cls(tokens=())
        for line in corpus:
            for piece in probe.split(line):
                seen.setdefault(piece, None)
        return cls(tokens=tuple(seen))

    def encode(self, text: str, length: int | None = None) -> list[int]:
        """Token ids of ``text``; cut or padded with PAD to ``length`` when given."""
        index = self.index
        ids = [index.get(p, UNK_ID) for p in self.split(text)]
        if length is not None:
            ids = ids[:length] + [PAD_ID] * max(0, length - len(ids))
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``, PAD dropped."""
        return self.join([self.tokens[int(i)] for i in ids if int(i) != PAD_ID])

    def pieces(self, ids: Iterable[int]) -> list[str]:
        """The token strings of ``ids`` (PAD dropped), for per-token tables."""
        return [self.tokens[int(i)] for i in ids if int(i) != PAD_ID]


TOKENIZERS: Registry[type[Tokenizer]] = Registry("tokenizer")

_WORD = re.compile(r"\w+|[^\w\s]")


@TOKENIZERS.register("word", "words and punctuation marks, split on whitespace; case kept")
@dataclass(frozen=True)
class WordTokenizer(Tokenizer):
    kind: str = "word"

    def split(self, text: str) -> list[str]:
        return _WORD.findall(text)

    def join(self, pieces: Sequence[str]) -> str:
        out = ""
        for p in pieces:
            glue = "" if (not out or (len(p) == 1 and not p.isalnum())) else " "
            out += glue + p
        return out


@TOKENIZERS.register("char", "single characters (spaces included)")
@dataclass(frozen=True)
class CharTokenizer(Tokenizer):
    kind: str = "char"

    def split(self, text: str) -> list[str]:
        return list(text)

    def join(self, pieces: Sequence[str]) -> str:
        return "".join(pieces)
