"""Text datasets: one record per line, tokenized (word or character level) and padded to one length.

- ``text:PATH`` reads a UTF-8 file, one record per line (blank lines skipped). Options:
  ``?tokenizer=word|char`` (default word), ``max_len=N`` (default 32: records are cut to N tokens and padded
  with PAD to the longest record, at most N), ``label=auto|tab|first``: ``tab`` takes ``LABEL<TAB>TEXT``
  lines, ``first`` uses the first word of each line as its class (and keeps it in the text), ``none`` gives
  every record the one class ``text`` (a language model, ``gpt``, trains on next tokens and needs no labels);
  ``auto`` (default) is ``tab`` when every line has a tab, else ``first``.
- ``demo-records``: the bundled synthetic corpus ``corpora/demo_records.txt`` (240 made-up records: names,
  addresses, phone numbers, diagnoses; see ``corpora/make_demo_records.py``), word level; the class is the
  record type (tenant, customer, employee, patient: order of first appearance).

A record is a row of int64 token ids (shape ``(L,)``); the tokenizer is ``Dataset.extras["tokenizer"]``,
the line itself ``Dataset.extras["lines"]``.

    >>> ds = load_demo_records()
    >>> ds.spec.modality, ds.spec.shape, ds.spec.class_names
    ('text', (18,), ('tenant', 'customer', 'employee', 'patient'))
    >>> ds.extras["tokenizer"].decode(ds.raw[1]) == ds.extras["lines"][1]
    True
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch

from fedleak.data.dataset import Dataset, DataSpec
from fedleak.data.tokenize import TOKENIZERS, Tokenizer
from fedleak.errors import FedleakInputError

DEMO_FILE = "demo_records.txt"
LABEL_MODES = ("auto", "tab", "first", "none")


def text_dataset(
    lines: list[str], name: str, tokenizer: str = "word", max_len: int = 32, label: str = "auto"
) -> Dataset:
    """Tokenize ``lines`` (one record each) into a text Dataset; see the module docstring for the options."""
    if label not in LABEL_MODES:
        raise FedleakInputError(f"{name}: label={label!r}; choose one of {', '.join(LABEL_MODES)}")
    if max_len < 1:
        raise FedleakInputError(f"{name}: max_len={max_len}; give a positive number of tokens, e.g. 32")
    lines = [ln.rstrip("\r\n") for ln in lines if ln.strip()]
    if not lines:
        raise FedleakInputError(f"{name}: no records; give a text file with one record per line")
    if label == "auto":
        label = "tab" if all("\t" in ln for ln in lines) else "first"
    if label == "none":
        texts, names = [ln.strip() for ln in lines], ["text"] * len(lines)
    elif label == "tab":
        if not all("\t" in ln for ln in lines):
            raise FedleakInputError(f"{name}: label=tab but a line has no tab; write LABEL<TAB>TEXT lines")
        pairs = [ln.split("\t", 1) for ln in lines]
        names, texts = [p[0].strip() for p in pairs], [p[1].strip() for p in pairs]
    else:
        texts = [ln.strip() for ln in lines]
        names = [t.split()[0] for t in texts]
    class_names = list(dict.fromkeys(names))  # order of first appearance
    if len(class_names) < 2 and label != "none":
        raise FedleakInputError(
            f"{name}: all records have the class {class_names[0]!r}; a classifier needs at least two "
            "(use label=tab with LABEL<TAB>TEXT lines), or label=none for a language model (--model gpt)"
        )
    tok: Tokenizer = TOKENIZERS.get(tokenizer).fit(texts)
    length = min(max_len, max(len(tok.split(t)) for t in texts))
    raw = torch.tensor([tok.encode(t, length) for t in texts], dtype=torch.long)
    lookup = {c: i for i, c in enumerate(class_names)}
    labels = torch.tensor([lookup[n] for n in names], dtype=torch.long)
    spec = DataSpec(
        name=name,
        modality="text",
        shape=(length,),
        num_classes=len(class_names),
        class_names=tuple(class_names),
        mean=(),
        std=(),
        vocab_size=tok.vocab_size,
    )
    return Dataset(spec, raw, labels, extras={"tokenizer": tok, "lines": texts})


def load_text(path: str, tokenizer: str = "word", max_len: str | int = 32, label: str = "auto") -> Dataset:
    """``text:PATH``: a UTF-8 file with one record per line."""
    if not path:
        raise FedleakInputError("text: no path given; write it as text:PATH")
    p = Path(path).expanduser()
    if not p.is_file():
        raise FedleakInputError(f"text: {p} is not a file; give a UTF-8 text file with one record per line")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise FedleakInputError(f"text: {p} cannot be read ({type(e).__name__}); save it as UTF-8") from None
    try:
        n = int(max_len)
    except ValueError:
        raise FedleakInputError(f"text: max_len={max_len!r}; give a whole number of tokens") from None
    return text_dataset(lines, f"text:{path}", tokenizer, n, label)


def demo_lines() -> list[str]:
    return (resources.files("fedleak.data") / "corpora" / DEMO_FILE).read_text(encoding="utf-8").splitlines()


def load_demo_records(tokenizer: str = "word", max_len: str | int = 32) -> Dataset:
    """The bundled synthetic records (see the module docstring)."""
    return text_dataset(demo_lines(), "demo-records", tokenizer, int(max_len), "first")
