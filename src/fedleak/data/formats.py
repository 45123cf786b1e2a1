"""Loaders for the file formats users have. Every failure is a FedleakInputError naming the file and the fix.

Record order is fixed and documented, so that an index means the same record everywhere:

- ImageFolder (a folder or a .tar/.tar.gz/.tgz of ``<root>/<class>/<file>``): class folders sorted by name
  (label = position), then files sorted by name within each class.
- CIFAR-10 python batches: ``data_batch_1`` .. ``data_batch_5``, then ``test_batch`` when present.
- MNIST/Fashion-MNIST idx: the train files, then the t10k files (whichever are present).
- npz: arrays ``x`` and ``y`` in their stored order; csv: rows in file order.
"""

from __future__ import annotations

import csv
import gzip
import io
import pickle
import struct
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from fedleak.data import cache
from fedleak.data.dataset import Dataset, image_spec, table_spec
from fedleak.errors import FedleakInputError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


def _existing(path: str, what: str) -> Path:
    if not path:
        raise FedleakInputError(f"{what}: no path given; write it as {what}:PATH")
    p = Path(path).expanduser()
    if not p.exists():
        raise FedleakInputError(f"{what}: {p} does not exist; check the path")
    return p


def _corrupt(path: Path, err: Exception) -> FedleakInputError:
    return FedleakInputError(
        f"{path} is corrupt or truncated ({type(err).__name__}: {str(err)[:80]}); copy or download it again"
    )


# ---------------------------------------------------------------- ImageFolder


def _iter_folder(root: Path) -> Iterator[tuple[str, bytes]]:
    for f in sorted(root.rglob("*")):
        if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
            yield f.relative_to(root).as_posix(), f.read_bytes()


def _iter_tar(path: Path) -> Iterator[tuple[str, bytes]]:
    try:
        with tarfile.open(path, "r:*") as tf:
            for m in tf:
                if m.isfile() and Path(m.name).suffix.lower() in IMAGE_SUFFIXES:
                    fobj = tf.extractfile(m)
                    if fobj is not None:
                        yield m.name, fobj.read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise _corrupt(path, e) from None


def _decode(name: str, data: bytes, source: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im = im.convert("L") if im.mode in ("L", "1", "I;16", "I", "F") else im.convert("RGB")
            return np.asarray(im)
    except Image.DecompressionBombError:
        raise FedleakInputError(
            f"{source}: image {name} claims more pixels than PIL's safety limit (a decompression bomb or a huge "
            "image); remove it or downscale it"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise FedleakInputError(f"{source}: image {name} cannot be decoded ({e}); remove or replace it") from None


def _decode_imagefolder(path: Path) -> dict[str, np.ndarray]:
    files = _iter_tar(path) if path.is_file() else _iter_folder(path)
    by_class: dict[str, list[tuple[str, bytes]]] = {}
    depths = set()
    for name, data in files:
        parts = Path(name).parts
        if len(parts) < 2:
            raise FedleakInputError(
                f"{path}: image {name} is not inside a class folder; lay it out as ROOT/<class>/<image>"
            )
        depths.add(len(parts))
        by_class.setdefault("/".join(parts[:-1]), []).append((parts[-1], data))
    if not by_class:
        raise FedleakInputError(f"{path}: no images found; expected ROOT/<class>/<image> (jpg, png, ...)")
    if len(depths) > 1:
        raise FedleakInputError(f"{path}: images lie at different folder depths; keep one ROOT/<class>/<image>")
    class_keys = sorted(by_class)
    class_names = [k.rsplit("/", 1)[-1] for k in class_keys]
    if len(set(class_names)) != len(class_names):
        raise FedleakInputError(f"{path}: the same class folder name appears under several roots")
    images, labels = [], []
    first_shape = None
    for label, key in enumerate(class_keys):
        for fname, data in sorted(by_class[key]):
            arr = _decode(f"{key}/{fname}", data, path)
            if first_shape is None:
                first_shape = arr.shape
            elif arr.shape[:2] != first_shape[:2]:
                raise FedleakInputError(
                    f"{path}: images of mixed sizes ({first_shape[1]}x{first_shape[0]} and "
                    f"{arr.shape[1]}x{arr.shape[0]} at {key}/{fname}); resize them to one size first"
                )
            images.append(arr)
            labels.append(label)
    if any(a.ndim != images[0].ndim for a in images):  # mixed grey and colour: make all colour
        images = [np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a for a in images]
    x = np.stack(images)
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    return {
        "x": np.ascontiguousarray(x),
        "y": np.asarray(labels, dtype=np.int64),
        "classes": np.array(class_names),
    }


def load_imagefolder(path: str, name: str = "imagefolder") -> Dataset:
    """ImageFolder as a folder or a tarball, decoded once and cached as a compact uint8 array file."""
    p = _existing(path, name)
    if p.is_file() and not p.name.lower().endswith(TAR_SUFFIXES):
        raise FedleakInputError(f"{name}: {p} is a file but not a tarball; give a folder or a .tar/.tar.gz")
    arrays = None
    key = None
    if p.is_file():
        key = cache.cache_key("imagefolder", p)
        arrays = cache.load_arrays(key)
    if arrays is None:
        arrays = _decode_imagefolder(p)
        if key is not None:
            cache.save_arrays(key, arrays)
    raw = torch.from_numpy(arrays["x"])
    labels = torch.from_numpy(arrays["y"]).long()
    classes = [str(c) for c in arrays["classes"]]
    return Dataset(image_spec(f"{name}:{path}", raw, classes), raw, labels)


# ---------------------------------------------------------------- CIFAR-10 python batches

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Reads CIFAR's pickled batches without running arbitrary code: only numpy array reconstruction."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):  # noqa: ANN201
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


def _read_cifar_batch(f: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(f, "rb") as fh:
            d = _ArrayOnlyUnpickler(fh, encoding="bytes").load()
        x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        y = np.asarray(d[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as e:
        raise _corrupt(f, e) from None
    return x, y


def load_cifar10(path: str) -> Dataset:
    """``cifar10:PATH``: the python batches folder, or the same images as an ImageFolder dir / tarball."""
    p = _existing(path, "cifar10")
    if p.is_file() or not (p / "data_batch_1").exists():
        if p.is_dir() and not any(p.iterdir()):
            raise FedleakInputError(f"cifar10: {p} is empty; give the cifar-10-batches-py folder")
        ds = load_imagefolder(path, name="cifar10")
        return ds
    files = [p / f"data_batch_{i}" for i in range(1, 6) if (p / f"data_batch_{i}").exists()]
    if (p / "test_batch").exists():
        files.append(p / "test_batch")
    parts = [_read_cifar_batch(f) for f in files]
    raw = torch.from_numpy(np.concatenate([a for a, _ in parts]))
    labels = torch.from_numpy(np.concatenate([b for _, b in parts]))
    return Dataset(image_spec(f"cifar10:{path}", raw, CIFAR10_CLASSES), raw, labels)


# ---------------------------------------------------------------- MNIST / Fashion-MNIST idx

FASHION_CLASSES = (
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "boot",
)


def _read_idx(f: Path) -> np.ndarray:
    try:
        opener = gzip.open if f.suffix == ".gz" else open
        with opener(f, "rb") as fh:
            data = fh.read()
        zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
        if zero != 0 or dtype_code != 0x08:
            raise ValueError("not an unsigned-byte idx file")
        dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
        arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
        if arr.size != int(np.prod(dims)):
            raise ValueError(f"expected {int(np.prod(dims))} values, found {arr.size}")
        return arr.reshape(dims)
    except (OSError, EOFError, zlib.error, struct.error, ValueError) as e:
        raise _corrupt(f, e) from None


def _find_idx(root: Path, stem: str) -> Path | None:
    for cand in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (root / cand).exists():
            return root / cand
    return None


def load_idx(path: str, name: str = "mnist") -> Dataset:
    p = _existing(path, name)
    if not p.is_dir():
        raise FedleakInputError(f"{name}: {p} is not a folder; give the folder holding the idx files")
    xs, ys = [], []
    for split in ("train", "t10k"):
        fi, fl = _find_idx(p, f"{split}-images-idx3-ubyte"), _find_idx(p, f"{split}-labels-idx1-ubyte")
        if fi and fl:
            x, y = _read_idx(fi), _read_idx(fl)
            if len(x) != len(y):
                raise FedleakInputError(f"{name}: {fi.name} has {len(x)} images but {fl.name} {len(y)} labels")
            xs.append(x)
            ys.append(y)
    if not xs:
        raise FedleakInputError(
            f"{name}: no idx files in {p}; expected train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz]"
            " (or the t10k pair)"
        )
    raw = torch.from_numpy(np.concatenate(xs)).unsqueeze(1).contiguous()
    labels = torch.from_numpy(np.concatenate(ys).astype(np.int64))
    classes = FASHION_CLASSES if name == "fashion-mnist" else tuple(str(i) for i in range(10))
    return Dataset(image_spec(f"{name}:{path}", raw, classes), raw, labels)


# ---------------------------------------------------------------- npz and csv


def load_npz(path: str) -> Dataset:
    p = _existing(path, "npz")
    try:
        with np.load(p, allow_pickle=False) as z:
            if "x" not in z.files or "y" not in z.files:
                raise FedleakInputError(f"npz: {p} holds {z.files}; it needs arrays named 'x' and 'y'")
            x, y = z["x"], z["y"]
    except FedleakInputError:
        raise
    except Exception as e:  # zipfile.BadZipFile, ValueError (object arrays), OSError
        raise _corrupt(p, e) from None
    if x.ndim == 0 or y.ndim == 0:
        raise FedleakInputError(f"npz: {p}: x and y must be arrays of records, not single values (0-d)")
    if len(x) == 0:
        raise FedleakInputError(f"npz: {p} holds no records (x is empty); give at least one record per class")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise FedleakInputError(f"npz: x has dtype {x.dtype}; features must be numbers (encode strings as numbers)")
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).sum())
        raise FedleakInputError(f"npz: x holds {bad} NaN or infinite values; clean or impute them first")
    if len(x) != len(y):
        raise FedleakInputError(f"npz: x has {len(x)} records but y has {len(y)}; give one label per record")
    y_t, class_names = _labels(y)
    if x.ndim == 2:
        raw = torch.tensor(x, dtype=torch.float32)
        return Dataset(table_spec(f"npz:{path}", raw, class_names), raw, y_t)
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if x.ndim != 4:
        raise FedleakInputError(f"npz: x has shape {x.shape}; use (N, F), (N, H, W), (N, C, H, W) or (N, H, W, C)")
    if x.dtype == np.uint8:
        raw = torch.from_numpy(np.ascontiguousarray(x))
    else:
        xf = x.astype(np.float32)
        if xf.min() < 0 or xf.max() > 1:
            raise FedleakInputError(f"npz: float images must lie in [0, 1] (found {xf.min():.3g}..{xf.max():.3g})")
        raw = torch.from_numpy(np.ascontiguousarray(xf))
    return Dataset(image_spec(f"npz:{path}", raw, class_names), raw, y_t)


def _labels(y: np.ndarray) -> tuple[torch.Tensor, list[str]]:
    y = np.asarray(y).reshape(-1)
    if np.issubdtype(y.dtype, np.integer) and y.min() >= 0:
        n = int(y.max()) + 1
        return torch.from_numpy(y.astype(np.int64)), [str(i) for i in range(n)]
    names = sorted({str(v) for v in y})
    lookup = {n: i for i, n in enumerate(names)}
    return torch.tensor([lookup[str(v)] for v in y], dtype=torch.long), names


MAX_CLASSES_UNNAMED = 100  # more distinct values than this in an unnamed last column is not a label column


def _csv_labels(y_raw: np.ndarray, p: Path, column: str, guessed: bool) -> tuple[torch.Tensor, list[str]]:
    """Labels from a column that must look like labels: integers or names, and (when the column was not named
    by the user) not a continuous quantity."""
    try:
        values = y_raw.astype(np.float64)
    except ValueError:
        values = None
    if values is not None:
        if not np.isfinite(values).all():
            raise FedleakInputError(f"csv: {p}: the label column {column!r} holds NaN or infinite values")
        if not np.all(values == np.round(values)):
            raise FedleakInputError(
                f"csv: {p}: the label column {column!r} holds non-integer numbers ({len(set(values.tolist()))} "
                "distinct values), which look like a feature, not a label; name the label column with "
                "csv:PATH?label=NAME"
            )
        y_num = values.astype(np.int64)
        if guessed and len(set(y_num.tolist())) > MAX_CLASSES_UNNAMED:
            raise FedleakInputError(
                f"csv: {p}: the last column {column!r} has {len(set(y_num.tolist()))} distinct values, too many "
                "for class labels; name the label column with csv:PATH?label=NAME"
            )
        if y_num.min() >= 0:
            return _labels(y_num)
    if guessed and len(set(y_raw.tolist())) > MAX_CLASSES_UNNAMED:
        raise FedleakInputError(
            f"csv: {p}: the last column {column!r} has {len(set(y_raw.tolist()))} distinct values, too many for "
            "class labels; name the label column with csv:PATH?label=NAME"
        )
    return _labels(y_raw)


def load_csv(path: str, label: str | None = None) -> Dataset:
    p = _existing(path, "csv")
    try:
        with open(p, newline="") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise _corrupt(p, e) from None
    rows = [r for r in rows if any(c.strip() for c in r)]  # blank lines carry nothing
    if len(rows) < 2:
        raise FedleakInputError(f"csv: {p} has no data rows; it needs a header line and one row per record")
    header, body = [h.strip() for h in rows[0]], rows[1:]
    if label is None:
        col = len(header) - 1
    elif label in header:
        col = header.index(label)
    else:
        from fedleak.errors import suggest

        raise FedleakInputError(
            f"csv: no label column {label!r} in {p}{suggest(label, header)}; columns are {', '.join(header)}"
        )
    bad = [i for i, r in enumerate(body) if len(r) != len(header)]
    if bad:
        raise FedleakInputError(f"csv: {p} line {bad[0] + 2} has {len(body[bad[0]])} fields, the header {len(header)}")
    feats = [i for i in range(len(header)) if i != col]
    try:
        x = np.array([[float(r[i]) for i in feats] for r in body], dtype=np.float32)
    except ValueError as e:
        raise FedleakInputError(f"csv: {p} has a non-numeric feature value ({e}); encode it as numbers") from None
    if not np.isfinite(x).all():
        raise FedleakInputError(f"csv: {p} has NaN or infinite feature values; clean or impute them first")
    y_raw = np.array([r[col].strip() for r in body])
    y, names = _csv_labels(y_raw, p, header[col], label is None)
    raw = torch.from_numpy(x)
    return Dataset(table_spec(f"csv:{path}", raw, names), raw, y)
