"""Inverting Gradients' settings per model family, chosen on measured runs (``bench/ig_presets.py``).

The ``ig`` and ``fedavg`` presets use one set of constants for every model: TV weight 1e-4, Adam learning rate 0.1,
dummies started N(0, 1) in model-input space. What works best differs by architecture, so this module holds, per
model family, the values that won a measured sweep: FedSGD updates of B = 1 (the first image of classes 0..3 of the
shared CIFAR-10 training images, one update each), TV in {0, 1e-5, 1e-4, 1e-3, 1e-2}, lr in {0.03, 0.1, 0.3},
start in {normal, uniform, mean}, compared by targets rebuilt (the one rule), then median PSNR, then mean SSIM.
A family is missing from the table where no measurement supports a change; those keep the preset's values.

User-given options win over these defaults (the caller merges them first, then the user's):

    >>> family_of("convnet:64"), family_of("convnet:16,norm=gn"), family_of("lenet:input=normalised")
    ('convnet:bn', 'convnet:gn', 'lenet:normalised')
    >>> family_of("resnet20:norm=none"), family_of("mlp:256,act=relu"), family_of("my_models.py:build")
    ('resnet20:none', 'mlp', 'user')
    >>> ig_defaults("my_models.py:build")
    {}
"""

from __future__ import annotations

from fedleak.models.user import is_user_spec
from fedleak.registry import parse_spec

NORMED = ("convnet", "resnet18", "resnet20")  # architectures whose norm= option (default bn) names the family

# family -> the MatchConfig values {tv, lr, start} that won its sweep. Each row: the measured medians (B = 1, four
# targets, CIFAR-10 first images of classes 0..3) of the chosen cell beside today's preset, and the command.
IG_FAMILY_DEFAULTS: dict[str, dict[str, float | str]] = {}


def family_of(model_spec: str) -> str:
    """The family of a model spec: its registered name, with the norm option (bn unless given) for the ConvNet and
    the ResNets and the input option for DLG's LeNet; ``user`` for ``file.py:factory`` / ``module:factory`` specs
    and live modules, whose architecture no sweep has seen."""
    if is_user_spec(model_spec):
        return "user"
    name, _, kwargs = parse_spec(model_spec)
    if name in NORMED:
        return f"{name}:{kwargs.get('norm', 'bn')}"
    if name == "lenet" and kwargs.get("input", "pixels") == "normalised":
        return "lenet:normalised"
    return name


def ig_defaults(model_spec: str) -> dict[str, float | str]:
    """The measured ``{tv, lr, start}`` for ``model_spec``'s family (a copy), or ``{}`` where none was measured
    (the preset's values then stand)."""
    return dict(IG_FAMILY_DEFAULTS.get(family_of(model_spec), {}))


__all__ = ["IG_FAMILY_DEFAULTS", "family_of", "ig_defaults"]
