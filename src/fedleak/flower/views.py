"""From what crossed Flower's wire to fedleak's :class:`~fedleak.fl.ClientUpdate`: pure conversions, no Flower
import (the strategy wrappers hand in plain dicts of arrays).

A reply carries weights (FedAvg: payload = w1 - w0), weights after one local gradient step (FedSGD as Flower
runs it: the gradient is (w0 - w1) / lr), or the gradient itself. Beside the payload the server knows what it
sent (the global state and the train config) and what the reply's metrics say (e.g. ``num-examples``); the
threat model decides which of these facts an attack may use.

    >>> import torch
    >>> sent = {"w": torch.zeros(2), "b": torch.zeros(1)}
    >>> reply = {"w": torch.tensor([0.1, -0.2]), "b": torch.tensor([0.3])}
    >>> u = build_update(sent, reply, names=["w", "b"], model="mlp", how="step", config={"lr": 0.1},
    ...                  metrics={"num-examples": 4}, round=1, client=0)
    >>> u.kind, u.num_samples, u.payload["w"].tolist()
    ('gradient', 4, [-1.0, 2.0])
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from fedleak.data.dataset import DataSpec
from fedleak.errors import FedleakInputError
from fedleak.fl.update import ClientUpdate, ThreatModel

PayloadHow = Literal["auto", "delta", "step", "gradient"]
PAYLOAD_HOWS = ("auto", "delta", "step", "gradient")


@dataclass(frozen=True)
class WireKeys:
    """Where the facts sit in Flower's records: train-config keys the server sends, metric keys a reply
       carries.

    The defaults are Flower's own (``num-examples``) and those of fedleak's ClientApps; a user whose app names
    them otherwise passes another ``WireKeys``.
    """

    num_examples: str = "num-examples"  # reply metrics (Flower's FedAvg weights by it)
    local_steps: str = "local-steps"  # reply metrics, optional
    lr: str = "lr"  # train config
    batch_size: str = "batch-size"  # train config
    local_epochs: str = "local-epochs"  # train config
    mode: str = "mode"  # train config: "fedavg" or "fedsgd"
    client: str = "partition-id"  # reply metrics, optional: which client (else the node id)


def to_tensors(arrays: Mapping[str, Any] | Sequence[Any], names: Sequence[str] | None = None) -> dict[str, Tensor]:
    """Named float tensors from a dict of arrays, or a list of arrays in ``names`` order (Flower's legacy
    ``Parameters``). Copies, so that later changes to Flower's records cannot reach an audit."""
    if isinstance(arrays, Mapping):
        items = list(arrays.items())
    else:
        arrays = list(arrays)
        if names is None or len(names) != len(arrays):
            raise FedleakInputError(
                f"a reply of {len(arrays)} unnamed arrays needs the model's {len(names or [])} state names "
                f"in order; "
                "pass model=... (a torch module or a fedleak spec with data_spec) to the auditing strategy"
            )
        items = list(zip(names, arrays, strict=True))
    return {k: torch.as_tensor(np.array(v, copy=True)) for k, v in items}


def _num(d: Mapping[str, Any], key: str) -> float | None:
    v = d.get(key)
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def resolve_how(how: PayloadHow, config: Mapping[str, Any], keys: WireKeys = WireKeys()) -> str:
    """``auto``: FedSGD (``mode = "fedsgd"`` in the train config) means a one-step reply, else a delta."""
    if how not in PAYLOAD_HOWS:
        raise FedleakInputError(f"payload {how!r}: choose one of {', '.join(PAYLOAD_HOWS)}")
    if how != "auto":
        return how
    return "step" if str(config.get(keys.mode, "")).lower() == "fedsgd" else "delta"


def build_update(
    sent: Mapping[str, Tensor],
    reply: Mapping[str, Tensor],
    *,
    names: Sequence[str],
    model: str,
    how: PayloadHow = "auto",
    config: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    keys: WireKeys = WireKeys(),
    threat: ThreatModel | None = None,
    data_spec: DataSpec | None = None,
    round: int | None = None,
    client: int | None = None,
    num_clients: int = 1,
    labels: Tensor | None = None,
    extras: dict | None = None,
    share_global: bool = False,
) -> ClientUpdate:
    """The :class:`ClientUpdate` a server can form from one reply (or one securely aggregated result).

    ``sent`` is the full state the server sent, ``reply`` the arrays that came back, ``names`` the trainable
    parameters. ``how``: ``delta`` (payload = reply - sent), ``step`` (one SGD step of rate ``config[lr]``:
    gradient = (sent - reply) / lr), ``gradient`` (the reply is the gradient), ``auto`` (``step`` when the
    train config says ``mode = "fedsgd"``). Metadata come from the config the server sent and the reply's
    metrics; ``threat`` then hides what it does not grant. ``share_global``: reference ``sent`` instead of
    copying it (the auditor does, so that the views of one round share one copy of the global model).
    """
    config, metrics = dict(config or {}), dict(metrics or {})
    how = resolve_how(how, config, keys)
    lr = _num(config, keys.lr)
    missing = [n for n in names if n not in reply or n not in sent]
    if missing:
        raise FedleakInputError(
            f"the reply lacks parameter {missing[0]!r} of the model; is the auditing strategy given the "
            f"model "
            "the clients train?"
        )
    if how == "delta":
        payload = {n: (reply[n].double() - sent[n].double()).float() for n in names}
        kind = "delta"
    elif how == "step":
        if not lr:
            raise FedleakInputError(
                f"a FedSGD reply is a one-step update, so the gradient needs the step size: send "
                f"{keys.lr!r} in "
                "the train config, or use payload='delta'"
            )
        payload = {n: ((sent[n].double() - reply[n].double()) / lr).float() for n in names}
        kind = "gradient"
    else:
        payload = {n: reply[n].float().clone() for n in names}
        kind = "gradient"
    num = _num(metrics, keys.num_examples)
    bsz = _num(config, keys.batch_size)
    steps = _num(metrics, keys.local_steps)
    epochs = _num(config, keys.local_epochs)
    if kind == "delta" and steps is None and epochs and num and bsz and num_clients == 1:
        steps = epochs * math.ceil(num / min(bsz, num))  # the server configured E and B and learns n
    if kind == "gradient":  # FedSGD: one batch of all the client's (sampled) records
        bsz, steps = (num if num is not None else bsz), None
    buffers = {k: v.clone() for k, v in reply.items() if k not in names and v.is_floating_point()} or None
    update = ClientUpdate(
        model=model,
        global_state=dict(sent) if share_global else {k: v.clone() for k, v in sent.items()},
        payload=payload,
        kind=kind,  # type: ignore[arg-type]
        num_samples=None if num is None else int(num),
        local_steps=None if steps is None else int(steps),
        local_lr=lr if kind == "delta" else None,
        batch_size=None if bsz is None else int(bsz),
        labels=labels,
        data_spec=data_spec,
        client=client,
        round=round,
        num_clients=num_clients,
        buffers=buffers if kind == "delta" else None,
        extras=dict(extras or {}),
    )
    return (threat or ThreatModel()).view(update)


def same_arrays(states: Sequence[Mapping[str, Tensor]]) -> bool:
    """True when several replies carry identical arrays: the server received one (securely aggregated) result
    copied into every reply, as Flower's SecAgg+ workflow hands it to ``aggregate_fit``."""
    if len(states) < 2:
        return False
    first = states[0]
    return all(s.keys() == first.keys() and all(torch.equal(s[k], first[k]) for k in first) for s in states[1:])
