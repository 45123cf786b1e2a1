"""Dataset specs: ``name`` or ``name:PATH`` with optional ``?key=value&...`` options.

    >>> from fedleak.data import load
    >>> load("digits").spec.shape
    (1, 8, 8)

Add your own with ``@DATASETS.register("name")`` on a function ``(path: str | None, **options) -> Dataset``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fedleak.data import bundled, formats, text
from fedleak.data.dataset import Dataset
from fedleak.errors import FedleakInputError
from fedleak.registry import Registry


@dataclass(frozen=True)
class DatasetEntry:
    loader: Callable[..., Dataset]
    needs_path: bool
    fmt: str  # what the path is, for `fedleak datasets`


DATASETS: Registry[DatasetEntry] = Registry("dataset")


def _bundled(fn: Callable[[], Dataset]) -> Callable[..., Dataset]:
    def loader(path: str | None = None, **options: str) -> Dataset:
        return fn()

    return loader


DATASETS.register("digits", "scikit-learn digits, 1,797 grey 8x8 images, 10 classes (bundled)")(
    DatasetEntry(_bundled(bundled.load_digits), False, "bundled")
)
DATASETS.register("breast-cancer", "scikit-learn Wisconsin breast cancer, 569 x 30 table, 2 classes (bundled)")(
    DatasetEntry(_bundled(bundled.load_breast_cancer), False, "bundled")
)
DATASETS.register("lfw-faces", "scikit-image lfw_subset, 200 grey 25x25 images, face / non-face (bundled)")(
    DatasetEntry(_bundled(bundled.load_lfw_faces), False, "bundled")
)
DATASETS.register("photos", "168 RGB 32x32 tiles of 8 sample photos, class = photo (bundled)")(
    DatasetEntry(_bundled(bundled.load_photos), False, "bundled")
)
DATASETS.register("cifar10", "CIFAR-10: the python batches folder, or an ImageFolder dir / tarball")(
    DatasetEntry(lambda path, **o: formats.load_cifar10(path), True, "folder or .tar.gz")
)
DATASETS.register("imagefolder", "ROOT/<class>/<image> as a folder or .tar/.tar.gz (decoded once, cached)")(
    DatasetEntry(lambda path, **o: formats.load_imagefolder(path), True, "folder or .tar.gz")
)
DATASETS.register("mnist", "MNIST idx files (train and/or t10k, .gz or raw) in a folder")(
    DatasetEntry(lambda path, **o: formats.load_idx(path, "mnist"), True, "folder")
)
DATASETS.register("fashion-mnist", "Fashion-MNIST idx files in a folder (Debian: dataset-fashion-mnist)")(
    DatasetEntry(lambda path, **o: formats.load_idx(path, "fashion-mnist"), True, "folder")
)
DATASETS.register("npz", "arrays x (N,F | N,H,W | N,C,H,W | N,H,W,C) and y in an .npz (no pickles)")(
    DatasetEntry(lambda path, **o: formats.load_npz(path), True, ".npz file")
)
DATASETS.register("csv", "a table with a header; the label is the last column unless ?label=NAME")(
    DatasetEntry(lambda path, label=None, **o: formats.load_csv(path, label), True, ".csv file")
)


def _text_options(fn: Callable[..., Dataset], allowed: tuple[str, ...]) -> Callable[..., Dataset]:
    def loader(path: str | None = None, **options: str) -> Dataset:
        bad = [k for k in options if k not in allowed]
        if bad:
            raise FedleakInputError(f"text dataset option {bad[0]!r}: choose from {', '.join(allowed)}")
        return fn(path, **options) if path is not None else fn(**options)

    return loader


DATASETS.register("text", "one record per line, ?tokenizer=word|char&max_len=32&label=auto|tab|first")(
    DatasetEntry(_text_options(text.load_text, ("tokenizer", "max_len", "label")), True, "text file")
)
DATASETS.register("demo-records", "240 synthetic records: names, addresses, phones, diagnoses (bundled)")(
    DatasetEntry(_text_options(text.load_demo_records, ("tokenizer", "max_len")), False, "bundled")
)


def parse_dataset_spec(spec: str) -> tuple[str, str | None, dict[str, str]]:
    """'csv:data.csv?label=y' -> ('csv', 'data.csv', {'label': 'y'})."""
    spec = spec.strip()
    if not spec:
        raise FedleakInputError("empty dataset spec; try `fedleak datasets` for the list")
    head, _, query = spec.partition("?")
    name, sep, path = head.partition(":")
    options = {}
    for part in filter(None, query.split("&")):
        k, eq, v = part.partition("=")
        if not eq:
            raise FedleakInputError(f"dataset option {part!r} in {spec!r} needs the form key=value")
        options[k.strip()] = v.strip()
    return name.strip().lower(), (path if sep else None), options


_CACHE: dict[str, Dataset] = {}


def load(spec: str) -> Dataset:
    """Load a dataset by spec (see ``fedleak datasets``). Results are memoised per process."""
    if spec in _CACHE:
        return _CACHE[spec]
    name, path, options = parse_dataset_spec(spec)
    entry = DATASETS.get(name)
    if entry.needs_path and not path:
        raise FedleakInputError(f"dataset {name!r} needs a path: {name}:PATH ({entry.fmt})")
    if not entry.needs_path and path:
        raise FedleakInputError(f"dataset {name!r} is bundled and takes no path; write just {name!r}")
    ds = entry.loader(path, **options)
    _CACHE[spec] = ds
    return ds
