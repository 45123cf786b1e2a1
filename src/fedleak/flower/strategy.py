"""The curious server inside any Flower app (Message API, ``flwr.serverapp.strategy``): wrap the user's
strategy, and every training reply becomes a :class:`~fedleak.fl.ClientUpdate` the configured attacks run on.

    from flwr.serverapp.strategy import FedAvg
    from fedleak.flower import AuditingStrategy

    strategy = AuditingStrategy(FedAvg(), attacks=["analytic"], model=net)   # net: the clients' torch model
    result = strategy.start(grid=grid, initial_arrays=ArrayRecord(net.state_dict()), num_rounds=3)
    for f in strategy.findings:                  # one record per (round, client or aggregate, attack)
        print(f.round, f.client, f.seen, f.attack, f.error or f.result)

Every call goes to the wrapped strategy unchanged, with the same arguments, and its answer is returned as is;
the wrapper only reads (and copies) what was sent in ``configure_train`` and what came back in
``aggregate_train``, before the wrapped strategy (e.g. a DP wrapper that clips in place) can change it. So
wrapped outermost it sees what reached the server; wrapped inside a DP wrapper it sees what that wrapper
passes on. Attributes it lacks are read from the wrapped strategy.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedleak.flower.auditor import Reply
from fedleak.flower.views import to_tensors
from fedleak.flower.wrapping import AuditingWrapper

log = logging.getLogger("fedleak.flower")

FEDLEAK_RECORD = "fedleak"  # an optional ConfigRecord fedleak's own ClientApps add (e.g. granted labels)


def _pick(records: Mapping[str, Any], preferred: str) -> Any | None:
    if preferred in records:
        return records[preferred]
    return next(iter(records.values())) if len(records) == 1 else None


def arrays_of(record: ArrayRecord) -> dict[str, Any]:
    return {k: a.numpy() for k, a in record.items()}


def reply_of(msg: Message, array_key: str = "arrays") -> Reply:
    """What one training reply carries, copied out of Flower's records."""
    content = msg.content
    ar = _pick(content.array_records, array_key)
    metrics = {}
    for mr in content.metric_records.values():
        metrics.update(dict(mr))
    extras: dict[str, Any] = {}
    fl = content.config_records.get(FEDLEAK_RECORD) if hasattr(content.config_records, "get") else None
    if fl is not None and "labels" in fl:
        import torch

        extras["labels"] = torch.as_tensor(list(fl["labels"]), dtype=torch.long)
    return Reply(
        node_id=msg.metadata.src_node_id,
        arrays=to_tensors(arrays_of(ar)) if ar else {},
        metrics=metrics,
        extras=extras,
    )


class AuditingStrategy(AuditingWrapper, Strategy):
    """Wraps a Message-API strategy; :attr:`findings` (and :attr:`views` with ``record=True``) fill as rounds
       end.

    ``attacks``: names for :func:`fedleak.attacks.invert`, ``(name, options)`` pairs or callables on a
    ``ClientUpdate``. ``model``: the clients' torch module (or a fedleak spec with ``data_spec``), so that
    views name the architecture and split parameters from buffers. ``payload``: how replies carry the update
    (``auto``: one-step FedSGD when the train config says ``mode = "fedsgd"``, else w1 - w0). ``threat``:
    which metadata attacks may use. ``secure_aggregation``: None detects an aggregate (identical arrays in
    every reply). ``client_ids``: node id -> client index, when the server knows it.
    """

    def summary(self) -> None:
        log.info("fedleak AuditingStrategy: %d attack(s) on every training reply", len(self.auditor.attacks))
        self.inner.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages = list(self.inner.configure_train(server_round, arrays, config, grid))
        try:
            key = getattr(self.inner, "arrayrecord_key", "arrays")
            cache: dict[int, Any] = {}
            sent = {}
            for m in messages:
                ar = _pick(m.content.array_records, key)
                cfg = _pick(m.content.config_records, getattr(self.inner, "configrecord_key", "config"))
                if ar is None:
                    continue
                if id(ar) not in cache:
                    cache[id(ar)] = to_tensors(arrays_of(ar))
                sent[m.metadata.dst_node_id] = (cache[id(ar)], dict(cfg or {}))
            self.auditor.begin_round(server_round, sent)
        except Exception as e:  # never break the training being watched
            self.auditor.errors.append(f"round {server_round}, configure_train: {type(e).__name__}: {e}")
            log.warning("fedleak audit: %s", self.auditor.errors[-1])
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        try:  # read (and copy) before the wrapped strategy, which may change replies in place
            key = getattr(self.inner, "arrayrecord_key", "arrays")
            self.auditor.observe(server_round, [reply_of(m, key) for m in replies if not m.has_error()])
        except Exception as e:
            self.auditor.errors.append(f"round {server_round}, aggregate_train: {type(e).__name__}: {e}")
            log.warning("fedleak audit: %s", self.auditor.errors[-1])
        return self.inner.aggregate_train(server_round, replies)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.inner.aggregate_evaluate(server_round, replies)
