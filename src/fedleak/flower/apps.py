"""fedleak's clients as Flower ClientApps: the same local work as :class:`fedleak.fl.Federation`'s clients
(same partition, seeds, FedSGD/FedAvg, local epochs, batch size, lr, defenses), behind Flower's wire.

A FedSGD client (as Flower runs it) takes one full-batch gradient step of the rate the server sent (``lr``)
and returns the weights: Flower's FedAvg then computes w - lr * (weighted mean gradient), exactly the local
engine's FedSGD server step. A FedAvg client returns its weights after local SGD.

    >>> import fedleak
    >>> from fedleak.fl import FedConfig
    >>> data = fedleak.data.load("digits")
    >>> task = ClientTask.make(fedleak.models.build("mlp", data.spec, seed=0), data, FedConfig(clients=3))
    >>> state = {k: v.clone() for k, v in task.model.state_dict().items()}
    >>> new, metrics, extra = local_work(task, 0, state, {"server-round": 1, "lr": 0.1})
    >>> sorted(metrics), sorted(new) == sorted(state)
    (['local-steps', 'num-examples'], True)
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from fedleak.data.dataset import Dataset
from fedleak.data.partition import partition
from fedleak.fl.client import UpdateTransform, client_update
from fedleak.fl.local import LocalTrainer
from fedleak.fl.server import FedConfig
from fedleak.fl.update import ThreatModel

PARTITION_KEY = "partition-id"  # Flower's simulation puts each virtual node's index here (node_config)


@dataclass
class ClientTask:
    """Everything a fedleak client needs, picklable so that Ray ships it to the ClientApp actors."""

    model: nn.Module
    train: Dataset
    parts: list[Tensor]
    config: FedConfig
    trainer: LocalTrainer | None = None
    transforms: Sequence[UpdateTransform] = field(default_factory=tuple)
    send_labels: bool = False  # only when the threat model grants labels (a simulation shortcut)

    @classmethod
    def make(cls, model: nn.Module, train: Dataset, config: FedConfig, **kw: Any) -> ClientTask:
        parts = partition(train.labels, config.partition, config.clients, config.seed)
        return cls(copy.deepcopy(model).cpu(), train, parts, config, **kw)

    def train_config(self) -> dict[str, Any]:
        """What the server sends with each training round (fedleak's wire keys, see ``WireKeys``)."""
        c = self.config
        return {
            "mode": c.mode,
            "lr": float(c.server_lr if c.mode == "fedsgd" else c.lr),
            "batch-size": int(c.batch_size),
            "local-epochs": int(c.local_epochs),
        }


def local_work(
    task: ClientTask, pid: int, state: dict[str, Tensor], config: dict[str, Any]
) -> tuple[dict[str, Tensor], dict[str, int | float], dict[str, Any]]:
    """Client ``pid``'s round: (the weights it sends back, its reply metrics, extra fields)."""
    c = task.config
    rnd = int(config.get("server-round", 0))
    model = copy.deepcopy(task.model)
    model.load_state_dict(state)
    fedavg = c.mode == "fedavg"
    u = client_update(
        model,
        task.train.subset(task.parts[pid]),
        local_epochs=c.local_epochs if fedavg and c.local_steps is None else None,
        local_steps=c.local_steps if fedavg else None,
        batch_size=c.batch_size,
        lr=c.lr,
        seed=c.seed * 1_000_003 + rnd * 10_007 + pid,  # as fedleak.fl.Federation seeds client pid in round rnd
        train_mode=c.train_mode,
        threat=ThreatModel(labels=True),
        trainer=task.trainer,
        transforms=task.transforms,
        client=pid,
        round=rnd,
    )
    new = {k: v.detach().clone() for k, v in state.items()}
    if u.kind == "delta":
        for k, d in u.payload.items():
            new[k] = state[k] + d.to(state[k].dtype)
        for k, b in (u.buffers or {}).items():
            new[k] = b.detach().clone()
    else:
        step = float(config.get("lr", c.server_lr))
        for k, g in u.payload.items():
            new[k] = state[k] - step * g.to(state[k].dtype)
    metrics: dict[str, int | float] = {"num-examples": int(u.num_samples or 0)}
    if u.kind == "delta":
        metrics["local-steps"] = int(u.local_steps or 0)
    extra = {"labels": [int(v) for v in u.labels]} if task.send_labels and u.labels is not None else {}
    return new, metrics, extra


def message_client_app(task: ClientTask, mods: Sequence[Any] = (), train_mods: Sequence[Any] = ()) -> Any:
    """A Message-API ClientApp running fedleak's client ``partition-id`` (also answers a query for it)."""
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    app = ClientApp(mods=list(mods))

    @app.train(mods=list(train_mods))  # e.g. Flower's fixedclipping_mod, which expects model arrays
    def train(msg: Message, context: Context) -> Message:
        pid = int(context.node_config[PARTITION_KEY])
        state = msg.content["arrays"].to_torch_state_dict()
        new, metrics, extra = local_work(task, pid, state, dict(msg.content["config"]))
        content = RecordDict({"arrays": ArrayRecord(new), "metrics": MetricRecord(metrics)})
        if extra:
            content["fedleak"] = ConfigRecord(extra)
        return Message(content=content, reply_to=msg)

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        pid = int(context.node_config[PARTITION_KEY])
        return Message(content=RecordDict({"metrics": MetricRecord({PARTITION_KEY: pid})}), reply_to=msg)

    return app


def legacy_client_app(task: ClientTask, mods: Sequence[Any] = ()) -> Any:
    """A legacy (NumPyClient) ClientApp running fedleak's client, e.g. with ``mods=[secaggplus_mod]``."""
    from flwr.client import NumPyClient
    from flwr.clientapp import ClientApp

    names = list(task.model.state_dict())

    class FedleakClient(NumPyClient):
        def __init__(self, pid: int) -> None:
            self.pid = pid

        def fit(self, parameters: list, config: dict) -> tuple[list, int, dict]:
            state = {k: torch.as_tensor(a.copy()) for k, a in zip(names, parameters, strict=True)}
            new, metrics, _ = local_work(task, self.pid, state, dict(config))
            num = int(metrics.pop("num-examples"))
            return [new[k].numpy() for k in names], num, dict(metrics)

    def client_fn(context: Any) -> Any:
        return FedleakClient(int(context.node_config[PARTITION_KEY])).to_client()

    return ClientApp(client_fn=client_fn, mods=list(mods))
