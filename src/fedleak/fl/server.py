"""The federated simulation: N clients over a partition, a fraction sampled each round, FedSGD or FedAvg,
aggregation weighted by sample count. Every round yields each sampled client's :class:`ClientUpdate`, so an
attack can take any client in any round.

    >>> import fedleak
    >>> from fedleak.fl import FedConfig, Federation
    >>> data = fedleak.data.load("digits")
    >>> train, test = data.split(0.2, seed=0)
    >>> fed = Federation(fedleak.models.build("mlp", data.spec, seed=0), train, test, FedConfig(clients=5, rounds=2))
    >>> [r.round for r in fed.run()]
    [1, 2]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from fedleak.data.dataset import Dataset
from fedleak.data.partition import partition
from fedleak.errors import FedleakInputError
from fedleak.fl.client import UpdateTransform, client_update
from fedleak.fl.local import LocalTrainer, evaluate
from fedleak.fl.update import ClientUpdate, ThreatModel


@dataclass(frozen=True)
class FedConfig:
    clients: int = 10
    rounds: int = 10
    fraction: float = 1.0
    mode: Literal["fedavg", "fedsgd"] = "fedavg"
    local_epochs: int = 1
    local_steps: int | None = None  # FedAvg: a fixed number of local steps instead of epochs
    batch_size: int = 32
    lr: float = 0.1
    server_lr: float = 1.0  # FedSGD: w <- w - server_lr * mean gradient
    partition: str = "iid"
    seed: int = 0
    train_mode: bool = True

    def validate(self) -> None:
        if self.clients < 1:
            raise FedleakInputError(f"--clients {self.clients}: need at least one client")
        if self.rounds < 0:
            raise FedleakInputError(f"--rounds {self.rounds}: must be 0 or more")
        if not 0 < self.fraction <= 1:
            raise FedleakInputError(f"--fraction {self.fraction}: must be in (0, 1]")
        if self.batch_size < 1 or self.local_epochs < 1 or not 0 < self.lr < float("inf"):
            raise FedleakInputError("--batch-size and --local-epochs must be >= 1 and --lr a finite number > 0")
        if self.mode not in ("fedavg", "fedsgd"):
            raise FedleakInputError(f"--mode {self.mode!r}: choose fedavg or fedsgd")


@dataclass
class RoundResult:
    round: int
    test_accuracy: float
    test_loss: float
    sampled: list[int]
    updates: list[ClientUpdate] = field(default_factory=list)  # what the server saw, per sampled client
    seconds: float = 0.0


Aggregator = Callable[[list[ClientUpdate], torch.Generator], dict[str, Tensor]]


def weighted_mean(updates: list[ClientUpdate], generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """FedAvg's aggregate: the payloads averaged with weights proportional to each client's sample count."""
    weights = torch.tensor([float(u.num_samples or 1) for u in updates])
    weights = weights / weights.sum()
    return {k: sum(w * u.payload[k] for w, u in zip(weights, updates, strict=True)) for k in updates[0].payload}


class Federation:
    """A server, its clients and their data; :meth:`run` yields one :class:`RoundResult` per round.

    Defenses are handed in as values: ``transforms`` apply to each client's update before it is sent,
    ``trainer`` replaces the clients' local SGD (e.g. DP-SGD), ``aggregator`` replaces the weighted mean
    (e.g. clipping and noise for client-level DP).
    """

    def __init__(
        self,
        model: nn.Module,
        train: Dataset,
        test: Dataset,
        config: FedConfig,
        *,
        threat: ThreatModel | None = None,
        transforms: Sequence[UpdateTransform] = (),
        trainer: LocalTrainer | None = None,
        aggregator: Aggregator | None = None,
    ) -> None:
        config.validate()
        self.model, self.train, self.test, self.config = model, train, test, config
        self.threat = threat or ThreatModel(labels=True)  # the simulation keeps everything; attacks take views
        self.transforms, self.trainer = list(transforms), trainer
        self.aggregator = aggregator or weighted_mean
        self.parts = partition(train.labels, config.partition, config.clients, config.seed)
        self.rng = np.random.default_rng(config.seed)
        self.round = 0
        dev = next(model.parameters()).device
        self.test_x, self.test_y = test.tensors()
        self.test_x, self.test_y = self.test_x.to(dev), self.test_y.to(dev)

    def client_data(self, k: int) -> Dataset:
        return self.train.subset(self.parts[k])

    def sample_clients(self) -> list[int]:
        n = max(1, int(round(self.config.fraction * self.config.clients)))
        return sorted(self.rng.choice(self.config.clients, size=n, replace=False).tolist())

    def step(self, keep_updates: bool = True) -> RoundResult:
        import time

        t0 = time.perf_counter()
        cfg = self.config
        self.round += 1
        sampled = self.sample_clients()
        fedavg = cfg.mode == "fedavg"
        updates = []
        for k in sampled:
            updates.append(
                client_update(
                    self.model,
                    self.client_data(k),
                    local_epochs=cfg.local_epochs if fedavg and cfg.local_steps is None else None,
                    local_steps=cfg.local_steps if fedavg else None,
                    batch_size=cfg.batch_size,
                    lr=cfg.lr,
                    seed=cfg.seed * 1_000_003 + self.round * 10_007 + k,
                    train_mode=cfg.train_mode,
                    threat=self.threat,
                    trainer=self.trainer,
                    transforms=self.transforms,
                    client=k,
                    round=self.round,
                )
            )
        g = torch.Generator().manual_seed(cfg.seed * 7919 + self.round)
        agg = self.aggregator(updates, g)
        self.apply(agg, updates)
        acc, loss = evaluate(self.model, self.test_x, self.test_y)
        return RoundResult(self.round, acc, loss, sampled, updates if keep_updates else [], time.perf_counter() - t0)

    @torch.no_grad()
    def apply(self, aggregate: dict[str, Tensor], updates: list[ClientUpdate]) -> None:
        """w <- w + mean delta (FedAvg) or w <- w - server_lr * mean gradient (FedSGD); buffers averaged."""
        params = dict(self.model.named_parameters())
        sign = 1.0 if updates[0].kind == "delta" else -self.config.server_lr
        for name, value in aggregate.items():
            params[name].add_(value.to(params[name].device), alpha=sign)
        with_buffers = [u.buffers for u in updates if u.buffers]
        if with_buffers and updates[0].kind == "delta":
            bufs = dict(self.model.named_buffers())
            for name, b in bufs.items():
                if b.is_floating_point():
                    b.copy_(torch.stack([ub[name].to(b.device) for ub in with_buffers]).mean(0))

    def run(self, keep_updates: bool = True) -> Iterator[RoundResult]:
        while self.round < self.config.rounds:
            yield self.step(keep_updates)
