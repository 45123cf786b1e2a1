"""Inverting Gradients' settings per model family, chosen on measured runs (``bench/ig_presets.py``).

The ``ig`` and ``fedavg`` presets use one set of constants for every model: TV weight 1e-4, Adam learning rate 0.1,
dummies started N(0, 1) in model-input space. What works best differs by architecture, so this module holds, per
model family, the values that won a measured sweep: FedSGD updates of B = 1 (the first image of classes 0..3, one
update each, clients in train mode) on the shared CIFAR-10 training images and on ``digits``; TV in {0, 1e-5, 1e-4,
1e-3, 1e-2} x lr in {0.03, 0.1, 0.3} at the normal start, then the starts {uniform, mean} at the best, then each
dataset's winner cross-checked on the other and at the preset's 2000 steps. Cells are compared by targets rebuilt
(``fedleak.metrics.image.is_rebuilt``), then median PSNR.

A family has a row only where one setting rebuilds at least as many targets as today's preset on both datasets,
scores a median PSNR no more than 0.5 dB below it on either (every budget measured), and beats it by at least 1 dB
on one. Families where no setting rebuilds anything (the differences are then among failed reconstructions: a
start at the mean colour fails closer to the mean image, which is not leakage) or where the datasets disagree keep
the preset's values. What the sweep found, in short: where the attack converges (MLP; LeNet on digits) TV is a bias
at the solution and costs tens of dB, and a start at the format's mean colour helps; where it does not (LeNet and
ConvNet on CIFAR-10 at these budgets) a large TV (1e-2) only blurs towards the mean image.

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

# family -> the MatchConfig values {tv, lr, start}. Each row: median PSNR of the four targets (B = 1) with these values
# beside today's preset (tv 1e-4, lr 0.1, start normal), targets rebuilt. Measured with (one thread, CPU):
#   OMP_NUM_THREADS=1 .venv/bin/python bench/ig_presets.py --datasets cifar10,digits --families FAMILY --iterations 200
#   ... --iterations 200 (or 2000) --extra "TV,LR,START"   (the cross-checks; today's cell is added to each)
#   .venv/bin/python bench/ig_presets.py --table-only      (the tables from the log)
# FedAvg (``--local-steps 2 --extra-batch 2``: two updates of 2 records, 2 local steps of batch 1, lr 0.01, 200 steps
# of the fedavg preset), each row's values beside today's: mlp CIFAR-10 64.6 vs 45.4, digits 78.5 vs 59.8 (4/4 both);
# lenet digits 59.6 vs 22.8 (4/4 vs 3/4), CIFAR-10 11.4 vs 9.8 (0/4 both); lenet:normalised digits 68.0 vs 33.5,
# CIFAR-10 11.2 vs 9.3.
IG_FAMILY_DEFAULTS: dict[str, dict[str, float | str]] = {
    # CIFAR-10 200 steps: 80.2 dB vs 40.4 (4/4 rebuilt both), 2000: 85.6 vs 40.2; digits 200: 80.8 vs 66.3 (4/4
    # both), 2000: 80.8 vs 65.6. B = 4 (one update of the four, 200 steps): CIFAR-10 72.7 vs 41.9, digits 69.2 vs 53.2.
    "mlp": {"tv": 1e-5, "lr": 0.1, "start": "mean"},
    # digits 200 steps: 71.8 dB vs 29.0 (4/4 rebuilt both); CIFAR-10 200: 11.8 vs 10.2, 2000: 14.6 vs 14.8 (0/4 both:
    # IG does not rebuild CIFAR-10 through DLG's LeNet; idlg does). CIFAR-10's own best (tv 1e-2, lr 0.3, uniform:
    # 18.3 vs 14.8 at 2000 steps, 0/4) fails every digit (9.0 dB, 0/4 vs 4/4). Digits 2000: 62.6 vs 29.0. B = 4:
    # digits 53.8 vs 20.2, CIFAR-10 10.4 vs 9.2.
    "lenet": {"tv": 0.0, "lr": 0.1, "start": "mean"},
    # digits 200 steps: 62.6 dB vs 40.5 (4/4 both); CIFAR-10 200: 12.2 vs 10.2 (0/4 both). CIFAR-10's own best (tv 1e-2,
    # lr 0.3, normal: 18.7 vs 13.4 at 2000 steps, 1/4 rebuilt vs 0/4) fails every digit (13.1 dB, 0/4 vs 4/4).
    # 2000 steps: CIFAR-10 13.7 vs 13.4 (0/4 both), digits 62.2 vs 40.5. B = 4: digits 75.0 vs 29.7, CIFAR-10 10.4
    # vs 8.9.
    "lenet:normalised": {"tv": 0.0, "lr": 0.1, "start": "mean"},
    # convnet:bn / convnet:gn (convnet:16, train mode, 100 steps): no setting rebuilds anything on either dataset (best
    # CIFAR-10 10.5 dB, digits 8.8, below or at the flat-image baselines 12.9 / 8.8; convnet:bn at 500 steps 10.1 vs
    # 8.4): no row. resnet20: digits only (a CIFAR-10 cell costs minutes), nothing rebuilt: no row.
}


# ``fedavg`` on these families runs DLG's engine (squared L2 distance, L-BFGS: the ``idlg`` preset's settings) on the
# replay of the client's local steps, not Inverting Gradients' (cosine, Adam). Measured on the issue's FedAvg batch
# (``fedleak invert --dataset imagefolder:CIFAR --model lenet --attack fedavg --num-images 8 --batch-size 4
# --local-epochs 1 --local-batch-size 2 --local-lr 0.01 --seed 0``, labels and step pairing right in both):
# Inverting Gradients' 2000 Adam steps rebuild 0 of 8 (median 11.4 dB, below the blank image's 13.1);
# DLG's engine with the image prior rebuilds 7 of 8 (median 38.9 dB, 7 above 30). idlg is also what rebuilds
# FedSGD CIFAR-10 through this network where ig does not (IG_FAMILY_DEFAULTS["lenet"]).
FEDAVG_L2_FAMILIES = ("lenet",)


def fedavg_engine(model_spec: str) -> str:
    """``l2`` (DLG's L-BFGS engine) where ``fedavg`` was measured to need it, else ``ig``.

    >>> fedavg_engine("lenet"), fedavg_engine("convnet:16")
    ('l2', 'ig')
    """
    return "l2" if family_of(model_spec) in FEDAVG_L2_FAMILIES else "ig"


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


__all__ = ["FEDAVG_L2_FAMILIES", "IG_FAMILY_DEFAULTS", "family_of", "fedavg_engine", "ig_defaults"]
