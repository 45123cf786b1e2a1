"""Secure aggregation as the server sees it: one record for the sum of K clients' updates.

In the local engine this is a faithful model of the server's view (the cryptography changes nothing it can
compute); ``fedleak.flower`` runs the real SecAgg+ protocol.

    >>> import torch
    >>> from fedleak.fl import ClientUpdate
    >>> def one(i):
    ...     w = {"w": torch.tensor([float(i)])}
    ...     return ClientUpdate("mlp", {}, w, "gradient", 2, None, None, 2, None, client=i)
    >>> u = [one(i) for i in range(3)]
    >>> s = secure_sum(u)
    >>> s.payload["w"].item(), s.num_clients, s.client, s.num_samples
    (3.0, 3, None, 6)
"""

from __future__ import annotations

import torch

from fedleak.errors import FedleakInputError
from fedleak.fl.update import ClientUpdate


def _same(values: list) -> object | None:
    return values[0] if values and all(v == values[0] for v in values) else None


def secure_sum(updates: list[ClientUpdate]) -> ClientUpdate:
    """The one record the server gets under secure aggregation: the plain sum of the payloads.

    Metadata survives only where every client's view has it (labels concatenated, sample counts summed;
    local hyperparameters kept when all clients share them). ``client`` is None, ``num_clients`` is K.
    """
    if not updates:
        raise FedleakInputError("secure aggregation needs at least one client update")
    if len({u.kind for u in updates}) != 1 or len({tuple(u.payload) for u in updates}) != 1:
        raise FedleakInputError("secure aggregation: all updates must be of one kind over the same parameters")
    first = updates[0]
    payload = {k: torch.stack([u.payload[k] for u in updates]).sum(0) for k in first.payload}
    counts = [u.num_samples for u in updates]
    labels = [u.labels for u in updates]
    return first.replace(
        payload=payload,
        num_samples=None if any(c is None for c in counts) else int(sum(counts)),  # type: ignore[arg-type]
        local_steps=_same([u.local_steps for u in updates]),
        local_lr=_same([u.local_lr for u in updates]),
        batch_size=_same([u.batch_size for u in updates]),
        labels=None if any(lab is None for lab in labels) else torch.cat(labels),  # type: ignore[arg-type]
        client=None,
        num_clients=sum(u.num_clients for u in updates),
        buffers=None,
        extras={**first.extras, "secagg": len(updates), "clients": [u.client for u in updates]},
    )


def secure_groups(updates: list[ClientUpdate], k: int) -> list[ClientUpdate]:
    """Split one round's updates into consecutive groups of K (the last may be larger) and sum each group:
    the server's whole view of the round under K-client secure aggregation."""
    if k < 1:
        raise FedleakInputError(f"secagg:{k}: K must be at least 1")
    if len(updates) < k:
        raise FedleakInputError(f"secagg:{k}: only {len(updates)} clients took part; lower K or sample more clients")
    groups = [updates[i : i + k] for i in range(0, len(updates) - len(updates) % k, k)]
    groups[-1] = groups[-1] + updates[len(groups) * k :]
    return [secure_sum(g) for g in groups]
