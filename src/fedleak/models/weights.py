"""Weights as safetensors: saving and loading never unpickles anything."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from fedleak.errors import FedleakInputError
from fedleak.runio import atomic_write_bytes


def save_weights(model_or_state: torch.nn.Module | dict[str, torch.Tensor], path: str | Path) -> Path:
    state = model_or_state.state_dict() if isinstance(model_or_state, torch.nn.Module) else model_or_state
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    return atomic_write_bytes(path, save(tensors))


def load_weights(model: torch.nn.Module, path: str | Path) -> torch.nn.Module:
    p = Path(path)
    if not p.exists():
        raise FedleakInputError(f"weights file {p} does not exist; check the path")
    try:
        state = load_file(str(p))
    except (SafetensorError, OSError, ValueError) as e:
        raise FedleakInputError(f"{p} is not a readable safetensors file ({e}); save weights with fedleak") from None
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        raise FedleakInputError(
            f"{p} does not fit this model (missing {missing[:3]}, unexpected {unexpected[:3]}, "
            f"other shapes {shapes[:3]}); use the same --model spec it was saved from"
        )
    model.load_state_dict(state)
    return model
