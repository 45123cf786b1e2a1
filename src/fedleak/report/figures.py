"""Pictures a person would rather look at than read: originals above reconstructions, the PSNR under each.

Torch-free: images are arrays (N, C, H, W) in [0, 1] (NumPy arrays or anything ``numpy.asarray`` takes,
torch tensors included).

>>> import numpy as np
>>> png = reconstruction_png(np.random.rand(3, 3, 8, 8), np.random.rand(3, 3, 8, 8), [9.1, 12.0, 50.3])
>>> png[:4] == b"\\x89PNG"
True
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fedleak.runio import atomic_write_bytes


def reconstruction_png(
    originals,  # noqa: ANN001
    reconstructions,  # noqa: ANN001
    psnr: Sequence[float],
    labels: Sequence[str] | None = None,
    recovered_labels: Sequence[str] | None = None,
    max_columns: int = 16,
    rebuilt: Sequence[bool] | None = None,
) -> bytes:
    """Originals (top row) above their matched reconstructions (bottom row), PSNR in dB under each pair (marked
    "rebuilt" where the one rule says so), wrapped into blocks of ``max_columns``. Images are (N, C, H, W) in
    [0, 1]."""
    originals = _array(originals)
    reconstructions = _array(reconstructions)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(originals)
    cols = min(n, max_columns)
    blocks = (n + cols - 1) // cols
    fig, axes = plt.subplots(2 * blocks, cols, figsize=(1.25 * cols + 0.6, 2.75 * blocks), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        b, c = divmod(i, cols)
        for row, img in ((2 * b, originals[i]), (2 * b + 1, reconstructions[i])):
            ax = axes[row][c]
            _show(ax, img)
            if row == 2 * b and labels is not None:
                ax.set_title(str(labels[i]), fontsize=7)
        caption = f"{float(psnr[i]):.1f} dB"
        if rebuilt is not None and rebuilt[i]:
            caption += " ✓"
        if recovered_labels is not None:
            caption += f"\n{recovered_labels[i]}"
        axes[2 * b + 1][c].set_title(caption, fontsize=7, y=-0.32)
    for b in range(blocks):
        axes[2 * b][0].text(
            -0.15,
            0.5,
            "original",
            transform=axes[2 * b][0].transAxes,
            rotation=90,
            va="center",
            ha="right",
            fontsize=8,
        )
        axes[2 * b + 1][0].text(
            -0.15,
            0.5,
            "attack output",
            transform=axes[2 * b + 1][0].transAxes,
            rotation=90,
            va="center",
            ha="right",
            fontsize=8,
        )
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def thumbnails_png(images, captions: Sequence[str], columns: int = 10) -> bytes:  # noqa: ANN001
    """A grid of small pictures (N, C, H, W) in [0, 1], each with its caption (e.g. the most exposed records)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = _array(images)
    n = len(images)
    cols = max(1, min(n, columns))
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(1.2 * cols + 0.2, 1.45 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        ax = axes[i // cols][i % cols]
        _show(ax, images[i])
        ax.set_title(str(captions[i]), fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _show(ax, img) -> None:  # noqa: ANN001
    """One (C, H, W) image in [0, 1] on ``ax``: grey for one channel, pixels as they are."""
    arr = np.clip(img, 0, 1).transpose(1, 2, 0)
    grey = arr.shape[2] == 1
    ax.imshow(arr[..., 0] if grey else arr, cmap="gray" if grey else None, vmin=0, vmax=1, interpolation="nearest")


def _array(x):  # noqa: ANN001, ANN202
    if hasattr(x, "detach"):
        x = x.detach().cpu().float().numpy()
    return np.asarray(x, dtype=np.float32)


def save_reconstruction_png(path: str | Path, *args, **kwargs) -> Path:  # noqa: ANN002, ANN003
    """:func:`reconstruction_png` written atomically to ``path``."""
    return atomic_write_bytes(path, reconstruction_png(*args, **kwargs))
