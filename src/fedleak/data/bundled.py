"""Datasets that ship inside installed packages and work offline.

- ``digits``: scikit-learn's 1,797 handwritten digits, 1x8x8, pixel values 0..16 scaled to [0, 1].
- ``breast-cancer``: scikit-learn's Wisconsin table, 569 rows x 30 features, 2 classes.
- ``lfw-faces``: scikit-image's ``lfw_subset``, 200 grey 1x25x25 images: 100 faces then 100 non-faces.
- ``photos``: 32x32 RGB tiles cut from eight sample photos of scikit-image and scikit-learn; the class is the
  source photo. Each photo is resized (area filter) so its short side is 128 px, then cut row by row into
  non-overlapping 32x32 tiles; photos in the fixed order of ``PHOTO_SOURCES``.
"""

from __future__ import annotations

import numpy as np
import torch

from fedleak.data.dataset import Dataset, image_spec, table_spec

PHOTO_SOURCES = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "china",
    "flower",
)


def load_digits() -> Dataset:
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    raw = torch.tensor(d.images / 16.0, dtype=torch.float32).unsqueeze(1)
    labels = torch.tensor(d.target, dtype=torch.long)
    return Dataset(image_spec("digits", raw, [str(i) for i in range(10)]), raw, labels)


def load_breast_cancer() -> Dataset:
    from sklearn.datasets import load_breast_cancer as sk_bc

    d = sk_bc()
    raw = torch.tensor(d.data, dtype=torch.float32)
    labels = torch.tensor(d.target, dtype=torch.long)
    return Dataset(table_spec("breast-cancer", raw, list(d.target_names)), raw, labels)


def load_lfw_faces() -> Dataset:
    from skimage.data import lfw_subset

    imgs = lfw_subset()  # (200, 25, 25) float in [0, 1]; the first 100 are faces
    raw = torch.tensor(imgs, dtype=torch.float32).unsqueeze(1)
    labels = torch.tensor([0] * 100 + [1] * 100, dtype=torch.long)
    return Dataset(image_spec("lfw-faces", raw, ["face", "non-face"]), raw, labels)


def _photo(name: str) -> np.ndarray:
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        return load_sample_image(f"{name}.jpg")
    import skimage.data

    return getattr(skimage.data, name)()


def load_photos(tile: int = 32, short_side: int = 128) -> Dataset:
    from PIL import Image

    tiles, labels = [], []
    for label, name in enumerate(PHOTO_SOURCES):
        img = Image.fromarray(np.asarray(_photo(name))[..., :3]).convert("RGB")
        w, h = img.size
        scale = short_side / min(w, h)
        img = img.resize((round(w * scale), round(h * scale)), Image.Resampling.BOX)
        arr = np.asarray(img)
        for r in range(0, arr.shape[0] - tile + 1, tile):
            for c in range(0, arr.shape[1] - tile + 1, tile):
                tiles.append(arr[r : r + tile, c : c + tile])
                labels.append(label)
    raw = torch.from_numpy(np.stack(tiles)).permute(0, 3, 1, 2).contiguous()
    return Dataset(image_spec("photos", raw, list(PHOTO_SOURCES)), raw, torch.tensor(labels))
