"""Device choice: 'cpu', 'cuda', 'cuda:1' or 'auto'; checked up front so a missing GPU is one clear line."""

from __future__ import annotations

import torch

from fedleak.errors import FedleakInputError


def resolve_device(name: str | torch.device | None = "cpu") -> torch.device:
    if isinstance(name, torch.device):
        return name
    name = (name or "cpu").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise FedleakInputError(f"--device {name}: no CUDA GPU is visible here; use --device cpu")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise FedleakInputError(f"unknown device {name!r}; use cpu, cuda, cuda:N or auto")
