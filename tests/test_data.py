import gzip
import io
import pickle
import struct
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from fedleak.data import load, partition
from fedleak.data.formats import load_cifar10, load_csv, load_idx, load_imagefolder, load_npz
from fedleak.errors import FedleakInputError


@pytest.mark.parametrize(
    "spec,shape,classes,n",
    [
        ("digits", (1, 8, 8), 10, 1797),
        ("breast-cancer", (30,), 2, 569),
        ("lfw-faces", (1, 25, 25), 2, 200),
        ("photos", (3, 32, 32), 8, 168),
    ],
)
def test_bundled_datasets_know_their_shape_and_classes(spec, shape, classes, n):
    ds = load(spec)
    assert ds.spec.shape == shape and ds.spec.num_classes == classes and len(ds) == n
    assert len(ds.spec.class_names) == classes and set(ds.labels.tolist()) == set(range(classes))
    x = ds.inputs([0, 1])
    assert x.dtype == torch.float32 and tuple(x.shape[1:]) == shape
    # normalisation round-trips to the stored pixels
    assert torch.allclose(ds.spec.denormalize(x), ds.pixels([0, 1]), atol=1e-5)


def test_normalised_images_have_zero_mean_unit_std_per_channel():
    ds = load("photos")
    x = ds.inputs()
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-2)
    assert torch.allclose(x.std(dim=(0, 2, 3)), torch.ones(3), atol=2e-2)


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _make_tree(root, sizes=None):
    """root/<class>/<name>.png with a known, distinct constant value per image."""
    sizes = sizes or {}
    files = {"zebra/b.png": 10, "zebra/a.png": 20, "apple/z.png": 30, "apple/c.png": 40}
    for rel, value in files.items():
        p = root / "train" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        h, w = sizes.get(rel, (6, 5))
        p.write_bytes(_png(np.full((h, w, 3), value, dtype=np.uint8)))
    return files


def test_imagefolder_order_is_sorted_classes_then_sorted_files(tmp_path, tmp_cache):
    _make_tree(tmp_path)
    ds = load_imagefolder(str(tmp_path))
    assert ds.spec.class_names == ("apple", "zebra")
    assert ds.labels.tolist() == [0, 0, 1, 1]
    assert ds.raw[:, 0, 0, 0].tolist() == [40, 30, 20, 10]  # apple/c, apple/z, zebra/a, zebra/b
    assert ds.spec.shape == (3, 6, 5)


def test_imagefolder_tarball_equals_folder_and_is_cached(tmp_path, tmp_cache):
    _make_tree(tmp_path / "src")
    tar = tmp_path / "imgs.tar.gz"
    with tarfile.open(tar, "w:gz") as tf:
        tf.add(tmp_path / "src" / "train", arcname="train")
    a = load_imagefolder(str(tmp_path / "src"))
    b = load_imagefolder(str(tar))
    assert torch.equal(a.raw, b.raw) and torch.equal(a.labels, b.labels)
    assert list(tmp_cache.glob("imagefolder-*.npz")), "the decoded tarball is cached"
    c = load_imagefolder(str(tar))  # from the cache
    assert torch.equal(b.raw, c.raw)


def test_truncated_tarball_is_a_clear_error(tmp_path, tmp_cache):
    _make_tree(tmp_path / "src")
    tar = tmp_path / "imgs.tar.gz"
    with tarfile.open(tar, "w:gz") as tf:
        tf.add(tmp_path / "src" / "train", arcname="train")
    data = tar.read_bytes()
    tar.write_bytes(data[: len(data) // 2])
    with pytest.raises(FedleakInputError, match="corrupt or truncated"):
        load_imagefolder(str(tar))


def test_mixed_image_sizes_are_refused(tmp_path, tmp_cache):
    _make_tree(tmp_path, sizes={"zebra/a.png": (7, 5)})
    with pytest.raises(FedleakInputError, match="mixed sizes"):
        load_imagefolder(str(tmp_path))


def test_missing_path_and_unknown_spec():
    with pytest.raises(FedleakInputError, match="does not exist"):
        load("imagefolder:/no/such/place.tar.gz")
    with pytest.raises(FedleakInputError, match="unknown dataset"):
        load("nosuch:thing")
    with pytest.raises(FedleakInputError, match="did you mean 'digits'"):
        load("digit")
    with pytest.raises(FedleakInputError, match="needs a path"):
        load("csv")


def test_csv_label_column_last_or_named(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("a,label,b\n1,yes,2\n3,no,4\n5,yes,6\n")
    ds = load_csv(str(p), label="label")
    assert ds.spec.shape == (2,) and ds.spec.class_names == ("no", "yes")
    assert ds.labels.tolist() == [1, 0, 1] and ds.raw[:, 1].tolist() == [2, 4, 6]
    with pytest.raises(FedleakInputError, match="non-numeric feature"):
        load_csv(str(p))  # label = last column (b), so the yes/no column is a feature
    q = tmp_path / "u.csv"
    q.write_text("a,b,y\n1,2,0\n3,4,1\n")
    assert load_csv(str(q)).labels.tolist() == [0, 1]
    with pytest.raises(FedleakInputError, match="no label column 'lable'.*did you mean 'label'"):
        load_csv(str(p), label="lable")
    assert load(f"csv:{p}?label=label").labels.tolist() == [1, 0, 1]


def test_npz_images_and_tables(tmp_path):
    x = (np.arange(2 * 4 * 4 * 3) % 256).astype(np.uint8).reshape(2, 4, 4, 3)
    np.savez(tmp_path / "img.npz", x=x, y=np.array([1, 0]))
    ds = load_npz(str(tmp_path / "img.npz"))
    assert ds.spec.shape == (3, 4, 4) and torch.equal(ds.raw[0, :, 1, 2], torch.from_numpy(x[0, 1, 2]))
    np.savez(tmp_path / "bad.npz", a=x)
    with pytest.raises(FedleakInputError, match="'x' and 'y'"):
        load_npz(str(tmp_path / "bad.npz"))


def _idx(arr: np.ndarray) -> bytes:
    return struct.pack(">HBB", 0, 8, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def test_idx_gz_and_raw_and_truncated(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 255, (5, 28, 28), dtype=np.uint8)
    labs = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(imgs)))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx(labs))
    ds = load_idx(str(tmp_path))
    assert torch.equal(ds.raw[:, 0], torch.from_numpy(imgs)) and ds.labels.tolist() == [3, 1, 4, 1, 5]
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx(labs)[:-2])
    with pytest.raises(FedleakInputError, match="corrupt or truncated"):
        load_idx(str(tmp_path))


def test_cifar_batches_load_without_running_code(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    data = np.random.default_rng(0).integers(0, 255, (4, 3072), dtype=np.uint8)
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": data, b"labels": [0, 1, 2, 9]}))
    ds = load_cifar10(str(folder))
    assert ds.spec.class_names[9] == "truck" and ds.labels.tolist() == [0, 1, 2, 9]
    assert torch.equal(ds.raw[1].flatten(), torch.from_numpy(data[1]))

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": Evil(), b"labels": [0]}))
    with pytest.raises(FedleakInputError, match="corrupt"):
        load_cifar10(str(folder))


def test_partitions_cover_the_data_disjointly_and_are_seeded():
    y = load("digits").labels
    for spec in ("iid", "dirichlet:0.3", "shards:2"):
        parts = partition(y, spec, 10, seed=3)
        allidx = torch.cat(parts)
        assert len(allidx) == len(y) and len(set(allidx.tolist())) == len(y), spec
        again = partition(y, spec, 10, seed=3)
        assert all(torch.equal(a, b) for a, b in zip(parts, again, strict=True)), spec
    iid_sizes = [len(p) for p in partition(y, "iid", 10)]
    assert max(iid_sizes) - min(iid_sizes) <= 1
    shard_classes = [len(set(y[p].tolist())) for p in partition(y, "shards:2", 10)]
    assert max(shard_classes) <= 4  # two label-sorted shards touch at most 2 labels each

    # small alpha concentrates each client's labels far more than IID does
    def top_share(parts):
        return float(np.mean([y[p].bincount(minlength=10).max().item() / len(p) for p in parts]))

    assert top_share(partition(y, "dirichlet:0.1", 10)) > 2 * top_share(partition(y, "iid", 10))


def test_shared_cifar_order_and_labels(cifar_spec):
    ds = load(cifar_spec)
    assert len(ds) == 50000 and ds.spec.shape == (3, 32, 32) and ds.spec.class_names[0] == "airplane"
    first = [0, 5000, 10000, 15000, 20000, 25000, 30000, 35000, 40000, 45000]
    assert ds.labels[first].tolist() == list(range(10))
    assert ds.raw.dtype == torch.uint8


def test_shared_mnist_idx(mnist_spec):
    ds = load(mnist_spec)
    assert len(ds) == 10000 and ds.spec.shape == (1, 28, 28) and ds.labels[0].item() == 7
