"""Client partitions of a dataset, seeded: IID, Dirichlet(alpha) over labels, McMahan's label shards.

Each function returns one index tensor per client (positions in the dataset).

    >>> import torch
    >>> parts = iid(torch.arange(10) % 2, num_clients=2, seed=0)
    >>> sorted(len(p) for p in parts)
    [5, 5]
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from fedleak.errors import FedleakInputError
from fedleak.registry import Registry, parse_spec

PARTITIONS: Registry = Registry("partition")


@PARTITIONS.register("iid", "a random equal split")
def iid(labels: Tensor, num_clients: int, seed: int = 0) -> list[Tensor]:
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(labels))
    return [torch.as_tensor(np.sort(p), dtype=torch.long) for p in np.array_split(perm, num_clients)]


@PARTITIONS.register("dirichlet", "label proportions per client drawn from Dirichlet(alpha); small alpha = skewed")
def dirichlet(labels: Tensor, num_clients: int, seed: int = 0, alpha: float = 0.5, min_size: int = 2) -> list[Tensor]:
    if alpha <= 0:
        raise FedleakInputError(f"dirichlet:{alpha}: alpha must be positive (e.g. dirichlet:0.5)")
    rng = np.random.default_rng(seed)
    y = np.asarray(labels)
    classes = np.unique(y)
    for _ in range(100):  # redraw until every client has a few records (the usual practice)
        parts: list[list[int]] = [[] for _ in range(num_clients)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(y == c))
            props = rng.dirichlet(np.full(num_clients, alpha))
            cuts = (np.cumsum(props) * len(idx)).astype(int)[:-1]
            for k, chunk in enumerate(np.split(idx, cuts)):
                parts[k].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            break
    return [torch.as_tensor(sorted(p), dtype=torch.long) for p in parts]


@PARTITIONS.register("shards", "McMahan et al.: sort by label, cut 2N shards (or K per client), deal them out")
def shards(labels: Tensor, num_clients: int, seed: int = 0, per_client: int = 2) -> list[Tensor]:
    rng = np.random.default_rng(seed)
    y = np.asarray(labels)
    order = np.argsort(y, kind="stable")
    n_shards = num_clients * per_client
    if n_shards > len(y):
        raise FedleakInputError(f"shards:{per_client}: {n_shards} shards but only {len(y)} records")
    pieces = np.array_split(order, n_shards)
    deal = rng.permutation(n_shards)
    return [
        torch.as_tensor(np.sort(np.concatenate([pieces[s] for s in deal[k * per_client : (k + 1) * per_client]])))
        for k in range(num_clients)
    ]


def partition(labels: Tensor, spec: str, num_clients: int, seed: int = 0) -> list[Tensor]:
    """``iid``, ``dirichlet:ALPHA`` or ``shards:K`` -> one index tensor per client."""
    name, args, _ = parse_spec(spec)
    fn = PARTITIONS.get(name)
    if num_clients < 1 or num_clients > len(labels):
        raise FedleakInputError(f"--clients {num_clients}: need between 1 and {len(labels)} clients for this data")
    try:
        if name == "dirichlet":
            return fn(labels, num_clients, seed, alpha=float(args[0]) if args else 0.5)
        if name == "shards":
            return fn(labels, num_clients, seed, per_client=int(args[0]) if args else 2)
    except ValueError:
        raise FedleakInputError(f"partition {spec!r}: write dirichlet:0.5 or shards:2") from None
    return fn(labels, num_clients, seed)
