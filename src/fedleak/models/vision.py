"""The image architectures that the gradient-inversion literature attacks, written here.

- :class:`LeNet`: the LeNet of Deep Leakage from Gradients (Zhu et al. 2019): three 5x5 convolutions with 12
  channels (strides 2, 2, 1), sigmoid activations, one linear layer; optionally DLG's uniform(-0.5, 0.5) init.
  As in DLG's code it sees pixels in [0, 1]: its first operation undoes the dataset's normalisation (fixed
  buffers set by :func:`fedleak.models.build`). Fed normalised inputs, the uniform(-0.5, 0.5) weights push the
  sigmoids into saturation and L-BFGS stalls on many CIFAR-10 images (measured: median 23 dB instead of 58).
- :class:`ConvNet`: the ConvNet of Inverting Gradients (Geiping et al. 2020): nine 3x3 conv-BN-ReLU layers of
  widths w, 2w, 2w, 4w x 6, with two 3x3 max-pools, and a linear head.
- :func:`resnet18`, :func:`resnet20`: CIFAR-style ResNets (3x3 stem, no max-pool) for 32x32 inputs.
"""

from __future__ import annotations

import torch
from torch import nn


def _flat_features(body: nn.Module, in_shape: tuple[int, ...]) -> int:
    with torch.no_grad():
        was = body.training
        body.eval()
        n = body(torch.zeros(1, *in_shape)).flatten(1).shape[1]
        body.train(was)
    return n


class LeNet(nn.Module):
    def __init__(self, in_shape: tuple[int, ...], num_classes: int, dlg_init: bool = True, pixels: bool = True) -> None:
        super().__init__()
        c = in_shape[0]
        self.pixels = pixels
        # x * input_std + input_mean: identity until build() sets the dataset's statistics
        self.register_buffer("input_mean", torch.zeros(c, 1, 1))
        self.register_buffer("input_std", torch.ones(c, 1, 1))
        self.body = nn.Sequential(
            nn.Conv2d(c, 12, 5, padding=2, stride=2),
            nn.Sigmoid(),
            nn.Conv2d(12, 12, 5, padding=2, stride=2),
            nn.Sigmoid(),
            nn.Conv2d(12, 12, 5, padding=2, stride=1),
            nn.Sigmoid(),
        )
        self.fc = nn.Linear(_flat_features(self.body, in_shape), num_classes)
        if dlg_init:
            for p in self.parameters():
                nn.init.uniform_(p, -0.5, 0.5)

    def set_input_stats(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        """The dataset's per-channel normalisation, undone in ``forward`` when the model sees pixels."""
        if self.pixels:
            self.input_mean.copy_(torch.tensor(mean).view(-1, 1, 1))
            self.input_std.copy_(torch.tensor(std).view(-1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.input_std + self.input_mean
        return self.fc(self.body(x).flatten(1))


def _conv_bn(cin: int, cout: int, norm: str) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), _norm(cout, norm), nn.ReLU()]


def _norm(channels: int, norm: str) -> nn.Module:
    if norm == "bn":
        return nn.BatchNorm2d(channels)
    if norm == "gn":
        return nn.GroupNorm(min(32, channels) if channels % min(32, channels) == 0 else 1, channels)
    return nn.Identity()


class ConvNet(nn.Module):
    def __init__(self, in_shape: tuple[int, ...], num_classes: int, width: int = 64, norm: str = "bn") -> None:
        super().__init__()
        c, w = in_shape[0], width
        widths = [c, w, 2 * w, 2 * w, 4 * w, 4 * w, 4 * w]
        layers: list[nn.Module] = []
        for cin, cout in zip(widths[:-1], widths[1:], strict=True):
            layers += _conv_bn(cin, cout, norm)
        layers.append(nn.MaxPool2d(3))
        for _ in range(3):
            layers += _conv_bn(4 * w, 4 * w, norm)
        if min(in_shape[1:]) >= 9:
            layers.append(nn.MaxPool2d(3))
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(_flat_features(self.body, in_shape), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x).flatten(1))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = _norm(cout, norm)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = _norm(cout, norm)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), _norm(cout, norm))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(
        self,
        in_shape: tuple[int, ...],
        num_classes: int,
        blocks: list[int],
        widths: list[int],
        norm: str = "bn",
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_shape[0], widths[0], 3, padding=1, bias=False), _norm(widths[0], norm), nn.ReLU()
        )
        layers: list[nn.Module] = []
        cin = widths[0]
        for i, (n, w) in enumerate(zip(blocks, widths, strict=True)):
            for j in range(n):
                layers.append(BasicBlock(cin, w, 2 if (j == 0 and i > 0) else 1, norm))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.layers(self.stem(x))).flatten(1))


def resnet18(in_shape: tuple[int, ...], num_classes: int, norm: str = "bn") -> ResNet:
    return ResNet(in_shape, num_classes, [2, 2, 2, 2], [64, 128, 256, 512], norm)


def resnet20(in_shape: tuple[int, ...], num_classes: int, norm: str = "bn") -> ResNet:
    return ResNet(in_shape, num_classes, [3, 3, 3], [16, 32, 64], norm)
