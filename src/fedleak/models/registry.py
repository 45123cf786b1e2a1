"""Model specs: ``name`` or ``name:ARGS``, e.g. ``mlp:256,128``, ``mlp:64,act=relu``, ``convnet:16``,
``lenet:init=torch``, ``resnet20:norm=gn``.

    >>> from fedleak.data import load
    >>> from fedleak.models import build
    >>> model = build("mlp:32", load("digits").spec, seed=0)
    >>> sum(p.numel() for p in model.parameters())
    2410

Add your own with ``@MODELS.register("name")`` on ``(in_shape, num_classes, args, kwargs) -> nn.Module``, or
without registering: ``path/to/file.py:factory`` / ``package.module:factory`` specs and any ``nn.Module``
(:mod:`fedleak.models.user`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from fedleak.data.dataset import DataSpec
from fedleak.device import resolve_device
from fedleak.errors import FedleakInputError
from fedleak.models import tabular, text, vision
from fedleak.models.user import build_user, is_user_spec, live_spec
from fedleak.models.weights import load_weights
from fedleak.registry import Registry, parse_spec

Builder = Callable[[tuple[int, ...], int, list[str], dict[str, str]], nn.Module]
MODELS: Registry[Builder] = Registry("model")

NORMS = ("bn", "gn", "none")


def _norm(kwargs: dict[str, str]) -> str:
    norm = kwargs.get("norm", "bn")
    if norm not in NORMS:
        raise FedleakInputError(f"norm={norm!r}: choose one of {', '.join(NORMS)}")
    return norm


def _need_image(name: str, in_shape: tuple[int, ...]) -> None:
    if len(in_shape) != 3:
        raise FedleakInputError(f"model {name!r} takes images (C, H, W), not records of shape {in_shape}; use mlp")


@MODELS.register(
    "lenet",
    "DLG's LeNet: 3 sigmoid 5x5 convs of 12 channels + linear; init=dlg (default) or torch; "
    "input=pixels (default: sees [0, 1] pixels, as DLG's code) or normalised",
)
def _lenet(in_shape, num_classes, args, kwargs):  # noqa: ANN001, ANN202
    _need_image("lenet", in_shape)
    init, inputs = kwargs.get("init", "dlg"), kwargs.get("input", "pixels")
    if init not in ("dlg", "torch"):
        raise FedleakInputError(f"lenet:init={init}: choose dlg (uniform(-0.5, 0.5)) or torch")
    if inputs not in ("pixels", "normalised"):
        raise FedleakInputError(f"lenet:input={inputs}: choose pixels or normalised")
    return vision.LeNet(in_shape, num_classes, dlg_init=init == "dlg", pixels=inputs == "pixels")


@MODELS.register("convnet", "Inverting Gradients' ConvNet; convnet:WIDTH (default 64), norm=bn|gn|none")
def _convnet(in_shape, num_classes, args, kwargs):  # noqa: ANN001, ANN202
    _need_image("convnet", in_shape)
    return vision.ConvNet(in_shape, num_classes, width=int(args[0]) if args else 64, norm=_norm(kwargs))


@MODELS.register("resnet18", "CIFAR ResNet-18 (3x3 stem, no max-pool); norm=bn|gn|none")
def _resnet18(in_shape, num_classes, args, kwargs):  # noqa: ANN001, ANN202
    _need_image("resnet18", in_shape)
    return vision.resnet18(in_shape, num_classes, _norm(kwargs))


@MODELS.register("resnet20", "CIFAR ResNet-20 (3 stages of 3 blocks, 16/32/64); norm=bn|gn|none")
def _resnet20(in_shape, num_classes, args, kwargs):  # noqa: ANN001, ANN202
    _need_image("resnet20", in_shape)
    return vision.resnet20(in_shape, num_classes, _norm(kwargs))


@MODELS.register("mlp", "MLP on flattened input; mlp:H1,H2,... (default 128), act=tanh|relu|sigmoid")
def _mlp(in_shape, num_classes, args, kwargs):  # noqa: ANN001, ANN202
    act = kwargs.get("act", "tanh")
    if act not in tabular.ACTIVATIONS:
        raise FedleakInputError(f"mlp act={act!r}: choose one of {', '.join(tabular.ACTIVATIONS)}")
    hidden = tuple(int(a) for a in args) if args else (128,)
    if any(h < 1 for h in hidden):
        raise FedleakInputError("mlp hidden sizes must be positive, e.g. mlp:256,128")
    return tabular.MLP(in_shape, num_classes, hidden, act)


def _need_text(name: str, in_shape: tuple[int, ...], kwargs: dict[str, str]) -> tuple[int, int]:
    if len(in_shape) != 1 or "vocab" not in kwargs:
        raise FedleakInputError(f"model {name!r} takes token ids of a text dataset (demo-records, text:PATH)")
    return int(kwargs["vocab"]), in_shape[0]


@MODELS.register("transformer", "text: transformer encoder; transformer:WIDTH,LAYERS (default 64,2), heads=4")
def _transformer(in_shape, num_classes, args, kwargs):  # noqa: ANN001, ANN202
    vocab, length = _need_text("transformer", in_shape, kwargs)
    width, layers = (int(args[0]) if args else 64), (int(args[1]) if len(args) > 1 else 2)
    return text.TextTransformer(vocab, length, num_classes, width, layers, int(kwargs.get("heads", 4)))


@MODELS.register("gpt", "text LM: GPT-style decoder; gpt:layers=2,dim=768,heads=12,tied=0,lora=R (next-token loss)")
def _gpt(in_shape, num_classes, args, kwargs):  # noqa: ANN001, ANN202
    return text.gpt_from_spec(*_need_text("gpt", in_shape, kwargs), args, kwargs)


@MODELS.register("lstm", "text: one-layer LSTM (cell written out); lstm:HIDDEN (default 64), emb=64")
def _lstm(in_shape, num_classes, args, kwargs):  # noqa: ANN001, ANN202
    vocab, _ = _need_text("lstm", in_shape, kwargs)
    return text.TextLSTM(vocab, num_classes, int(args[0]) if args else 64, int(kwargs.get("emb", 64)))


def build(
    spec: str | nn.Module,
    data: DataSpec,
    seed: int = 0,
    device: str | torch.device = "cpu",
    weights: str | Path | None = None,
) -> nn.Module:
    """Build the model named by ``spec`` for ``data``'s record shape and class count, seeded; ``spec`` may be a
    registered name, ``path/to/file.py:factory``, ``package.module:factory`` or any ``nn.Module``. ``weights``:
    a safetensors file of trained weights (shapes checked)."""
    if isinstance(spec, nn.Module):
        spec = live_spec(spec)
    if is_user_spec(spec):
        state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        try:
            model = build_user(spec, tuple(data.shape), data.num_classes)
        finally:
            torch.random.set_rng_state(state)
        model.fedleak_spec = spec  # type: ignore[attr-defined]
        if weights is not None:
            load_weights(model, weights)
        return model.to(resolve_device(device))
    name, args, kwargs = parse_spec(spec)
    builder = MODELS.get(name)
    if data.vocab_size is not None:  # text: the embedding table's size comes from the tokenizer
        kwargs.setdefault("vocab", str(data.vocab_size))
    dev = resolve_device(device)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = builder(tuple(data.shape), data.num_classes, args, kwargs)
    except ValueError as e:
        if isinstance(e, FedleakInputError):
            raise
        raise FedleakInputError(f"model spec {spec!r}: {e}; see `fedleak invert --help` for model specs") from None
    except RuntimeError as e:
        raise FedleakInputError(
            f"model {spec!r} does not take records of shape {tuple(data.shape)} ({str(e)[:60]}); pick another model"
        ) from None
    finally:
        torch.random.set_rng_state(state)
    if hasattr(model, "set_input_stats") and data.mean:
        model.set_input_stats(data.mean, data.std)  # models that see pixels undo the normalisation themselves
    model.fedleak_spec = spec  # type: ignore[attr-defined]  # so a ClientUpdate can name it
    if weights is not None:
        load_weights(model, weights)
    return model.to(dev)
