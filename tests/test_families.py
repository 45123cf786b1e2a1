"""Inverting Gradients' settings per model family (attacks/inversion/families.py) and the dummies' start option
(MatchConfig.start, GradientMatching._start)."""

from __future__ import annotations

import pytest
import torch

import fedleak
from fedleak.attacks.inversion.families import IG_FAMILY_DEFAULTS, family_of, ig_defaults
from fedleak.attacks.inversion.optimize import MEAN_START_NOISE, GradientMatching, MatchConfig, make_config
from fedleak.data.dataset import DataSpec
from fedleak.errors import FedleakInputError

# CIFAR-10's format: three channels whose mean colour and spread differ, so a start normalised with the wrong
# channel's statistics (or not at all) lands visibly off
SPEC = DataSpec(
    name="cifar-like",
    modality="image",
    shape=(3, 32, 32),
    num_classes=10,
    class_names=tuple(str(i) for i in range(10)),
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
)
SHAPE = (4, 3, 32, 32)  # 4,096 pixels per channel: the mean of N(0, 0.1^2) noise has a standard error of 0.0016


def start(kind: str, r: int = 0, seed: int = 0) -> torch.Tensor:
    x, _ = GradientMatching("ig", MatchConfig(start=kind, seed=seed))._start(r, SHAPE, None, torch.float32, SPEC)
    return x


@pytest.mark.parametrize(
    ("spec", "family"),
    [
        ("lenet", "lenet"),
        ("lenet:init=torch", "lenet"),
        ("lenet:input=pixels", "lenet"),
        ("lenet:input=normalised", "lenet:normalised"),
        ("convnet", "convnet:bn"),
        ("convnet:16", "convnet:bn"),
        ("convnet:64,norm=bn", "convnet:bn"),
        ("convnet:16,norm=gn", "convnet:gn"),
        ("convnet:norm=none", "convnet:none"),
        ("resnet20", "resnet20:bn"),
        ("resnet18:norm=gn", "resnet18:gn"),
        ("mlp", "mlp"),
        ("mlp:1000,act=relu", "mlp"),
        ("path/to/net.py:factory", "user"),
        ("my_pkg.models:factory", "user"),
    ],
)
def test_family_of(spec: str, family: str) -> None:
    assert family_of(spec) == family


def test_live_module_is_a_user_family() -> None:
    spec = fedleak.models.user.live_spec(torch.nn.Linear(4, 2))
    assert family_of(spec) == "user" and ig_defaults(spec) == {}


def test_defaults_are_valid_options_and_copies() -> None:
    for family, values in IG_FAMILY_DEFAULTS.items():
        assert set(values) <= {"tv", "lr", "start"}, family
        cfg = make_config("ig", **values)  # validates: a table row that the engine would refuse fails here
        assert (cfg.tv, cfg.lr, cfg.start) == (
            values.get("tv", cfg.tv),
            values.get("lr", cfg.lr),
            values.get("start", cfg.start),
        )
    spec = next((s for s in ("convnet:16", "lenet", "mlp") if family_of(s) in IG_FAMILY_DEFAULTS), None)
    if spec is not None:
        ig_defaults(spec)["tv"] = -1.0  # the caller's copy
        assert IG_FAMILY_DEFAULTS[family_of(spec)].get("tv") != -1.0


def test_unknown_family_has_no_defaults() -> None:
    assert ig_defaults("transformer:64,2") == {}


def test_normal_start_is_todays_draw() -> None:
    # the default start is unchanged: N(0, 1) in model-input space from the (seed, restart) generator
    want = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3 * 1_000_003 + 2))
    assert torch.equal(start("normal", r=2, seed=3), want)


def test_uniform_start_fills_the_pixel_box() -> None:
    px = SPEC.denormalize(start("uniform"))
    assert px.min() >= -1e-6 and px.max() <= 1 + 1e-6  # inside the valid box, every channel
    for c in range(3):  # and spread over all of it (not U(0, 1) in model-input space, which spans 0.25 of it)
        assert px[:, c].min() < 0.01 and px[:, c].max() > 0.99
        assert abs(float(px[:, c].mean()) - 0.5) < 0.02


def test_mean_start_sits_at_the_format_mean() -> None:
    px = SPEC.denormalize(start("mean"))
    for c, m in enumerate(SPEC.mean):
        assert abs(float(px[:, c].mean()) - m) < 0.01  # > 6 standard errors
        assert abs(float(px[:, c].std()) - MEAN_START_NOISE) < 0.01  # the noise is in pixels, not model inputs


@pytest.mark.parametrize("kind", ["normal", "uniform", "mean"])
def test_starts_are_seeded(kind: str) -> None:
    assert torch.equal(start(kind, r=1, seed=5), start(kind, r=1, seed=5))
    assert not torch.equal(start(kind, r=1, seed=5), start(kind, r=2, seed=5))  # each restart its own draw
    assert not torch.equal(start(kind, r=1, seed=5), start(kind, r=1, seed=6))


def test_bad_start_is_one_line_input_error() -> None:
    with pytest.raises(FedleakInputError, match="start 'zeros': choose normal, uniform, mean"):
        make_config("ig", start="zeros")


def test_start_reaches_the_attack() -> None:
    # one Adam step of 1e-6: the returned records are the start's, so the option must have reached the engine
    data = fedleak.data.load("digits")
    update = fedleak.fl.client_update(fedleak.models.build("mlp", data.spec, seed=0), data.subset([0]))
    px = {}
    for kind in ("normal", "uniform", "mean"):
        given = ("start", "iterations", "lr")  # as the user's: no family default replaces them
        attack = GradientMatching("ig", make_config("ig", start=kind, iterations=1, lr=1e-6), given)
        px[kind] = attack.run([update])[0].pixels
    at_bounds = lambda p: float(((p <= 0) | (p >= 1)).float().mean())  # noqa: E731
    assert at_bounds(px["normal"]) > 0.1  # N(0, 1) inputs leave the box on a fifth of the pixels (clamped)
    assert at_bounds(px["uniform"]) == 0.0 and float(px["uniform"].std()) > 0.2
    assert float(px["mean"].std()) < 0.15 and abs(float(px["mean"].mean()) - data.spec.mean[0]) < 0.05
