"""The one seed derivation of fedleak's experiments: a base seed and named labels -> a seed, by hash, so that
two streams never collide by arithmetic (``seed + client`` and ``seed * 1000 + client`` did) and the same labels
always give the same seed, whatever ran before.

    >>> derive_seed(0, "probe", "client", 3) == derive_seed(0, "probe", "client", 3)
    True
    >>> derive_seed(0, "client", 1) != derive_seed(1, "client", 0)
    True
"""

from __future__ import annotations

import hashlib


def derive_seed(base: int, *labels: object) -> int:
    """A 31-bit seed for ``labels`` under the run's ``base`` seed."""
    text = "/".join([str(int(base)), *(str(label) for label in labels)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") & 0x7FFF_FFFF


def generator(base: int, *labels: object):  # noqa: ANN201
    """A torch.Generator seeded by :func:`derive_seed`."""
    import torch

    return torch.Generator().manual_seed(derive_seed(base, *labels))
