"""The user's model, data and training: plain PyTorch and scikit-learn, nothing from fedleak."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn


class Net(nn.Module):
    """8x8 digits -> 10 classes: one hidden layer of 128 tanh units."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.Tanh(), nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def load_data(
    partition_id: int, num_partitions: int, seed: int = 0, records: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """This client's share of the digits (its first ``records`` when given): pixels in [0, 1], (n, 1, 8, 8)."""
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(x))
    mine = np.array_split(order, num_partitions)[partition_id][:records]
    pixels = torch.tensor(x[mine] / 16.0, dtype=torch.float32).view(-1, 1, 8, 8)
    return pixels, torch.tensor(y[mine], dtype=torch.long)


def train(net: Net, x: torch.Tensor, y: torch.Tensor, epochs: int, batch_size: int, lr: float, seed: int) -> float:
    """Minibatch SGD; returns the last batch's loss."""
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    loss = torch.zeros(())
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch_size):
            idx = perm[i : i + batch_size]
            opt.zero_grad()
            loss = F.cross_entropy(net(x[idx]), y[idx])
            loss.backward()
            opt.step()
    return float(loss)


@torch.no_grad()
def accuracy(net: Net, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((net(x).argmax(1) == y).float().mean())
