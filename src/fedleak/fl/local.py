"""Local training and evaluation: the plain SGD loop a client (or a centrally trained target) runs.

A defense that changes how a client trains (DP-SGD) is handed in as a :class:`LocalTrainer` value; ``fl``
itself knows no defense.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class TrainSpec:
    """How to train locally: E epochs of batch-B SGD at rate lr (or a fixed number of steps)."""

    epochs: int = 1
    steps: int | None = None  # if set, exactly this many minibatch steps (cycling through the data)
    batch_size: int = 32
    lr: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    optimizer: str = "sgd"  # "sgd" or "adam"


class LocalTrainer(Protocol):
    """How a client computes what it sends. The default is :class:`SGDTrainer`; a defense such as DP-SGD hands
    the client another value with the same two methods."""

    def train(self, model: nn.Module, x: Tensor, y: Tensor, spec: TrainSpec, generator: torch.Generator) -> int:
        """Train ``model`` in place on (x, y) (FedAvg); return the number of optimiser steps taken."""
        ...

    def gradient(self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        """The gradient a FedSGD client sends for the batch (x, y), per parameter name."""
        ...


def make_optimizer(model: nn.Module, spec: TrainSpec) -> torch.optim.Optimizer:
    if spec.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)


def minibatches(n: int, spec: TrainSpec, generator: torch.Generator):  # noqa: ANN201
    """Index batches: shuffled each epoch; ``spec.steps`` batches in all when set, else ``spec.epochs`` epochs."""
    b = max(1, min(spec.batch_size, n))
    total = spec.steps if spec.steps is not None else spec.epochs * ((n + b - 1) // b)
    done = 0
    while done < total:
        perm = torch.randperm(n, generator=generator)
        for i in range(0, n, b):
            if done >= total:
                return
            yield perm[i : i + b]
            done += 1


def sgd_train(model: nn.Module, x: Tensor, y: Tensor, spec: TrainSpec, generator: torch.Generator) -> int:
    """Minibatch SGD (or Adam) on cross-entropy in the model's current mode; returns the steps taken."""
    opt = make_optimizer(model, spec)
    steps = 0
    for idx in minibatches(len(x), spec, generator):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
        steps += 1
    return steps


def batch_gradient(model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Tensor]:
    """The gradient of the mean cross-entropy over (x, y), per parameter name."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    loss = F.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, list(params.values()))
    return {n: g.detach() for n, g in zip(params, grads, strict=True)}


class SGDTrainer:
    """The honest client: plain minibatch SGD for FedAvg, the plain batch gradient for FedSGD."""

    def train(self, model: nn.Module, x: Tensor, y: Tensor, spec: TrainSpec, generator: torch.Generator) -> int:
        return sgd_train(model, x, y, spec, generator)

    def gradient(self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        return batch_gradient(model, x, y)


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 1024) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) in eval mode, per record for a classifier. A language model (one with
    ``training_targets``, e.g. ``gpt``) is scored on its own next tokens instead of ``y``: next-token accuracy
    and the mean cross-entropy per predicted token (nats; ``exp`` of it is the perplexity), padding excluded."""
    was = model.training
    model.eval()
    correct, loss, n = 0, 0.0, 0
    dev = next(model.parameters()).device
    lm_targets = getattr(model, "training_targets", None)
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size].to(dev), y[i : i + batch_size].to(dev)
        if callable(lm_targets):
            yb = lm_targets(xb)
        out = model(xb)
        loss += float(F.cross_entropy(out, yb, reduction="sum"))  # ignore_index (-100) positions left out
        keep = yb != -100
        correct += int(((out.argmax(1) == yb) & keep).sum())
        n += int(keep.sum())
    model.train(was)
    n = max(1, n)
    return correct / n, loss / n


@torch.no_grad()
def predict_logits(model: nn.Module, x: Tensor, batch_size: int = 1024) -> Tensor:
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    out = torch.cat([model(x[i : i + batch_size].to(dev)) for i in range(0, len(x), batch_size)])
    model.train(was)
    return out
