"""Multi-layer perceptrons for tables and small images (inputs are flattened).

Plain ``mlp`` is one hidden layer of 128 tanh units: the classic membership-inference target (Shokri et al.).
Its first layer is fully connected with a bias, which is what the analytic attack of Phong et al. exploits.
"""

from __future__ import annotations

import math

from torch import nn

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "sigmoid": nn.Sigmoid}


class MLP(nn.Module):
    def __init__(
        self, in_shape: tuple[int, ...], num_classes: int, hidden: tuple[int, ...] = (128,), act: str = "tanh"
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(in_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), ACTIVATIONS[act]()]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):  # noqa: ANN001, ANN201
        return self.net(x)
