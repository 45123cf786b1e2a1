"""What a BatchNorm layer's running statistics reveal about the batch, as a prior for gradient inversion.

In train mode each BatchNorm call moves its running buffers towards the batch's statistics of its input:
``running <- (1 - f) * running + f * stat`` with ``f`` the layer's momentum (``None``: the cumulative average,
``f = 1 / num_batches_tracked`` after the count is raised), ``stat`` the per-channel mean and the *unbiased*
variance. After E calls (one per local step) the buffers are

    running_E = a_0 * running_0 + sum_e w_e * stat_e,   a_0 = prod_e (1 - f_e),   w_e = f_e * prod_{e' > e} (1 - f_e').

A FedAvg client sends its state dict, buffers included, so the server knows ``running_E`` and ``running_0`` (it
sent w0): the update reveals ``sum_e w_e stat_e``, a weighted average of the local steps' batch statistics at
every BatchNorm layer. The attack's replay computes every step's statistics of its dummy batch, so it predicts
those buffers exactly; the prior is the distance between the prediction and what was sent (source
``"update"``). At the true records in the client's order it is 0 to float precision. This is Yin et al.'s
BatchNorm regulariser (CVPR 2021, "See through gradients"), with the targets the update itself reveals instead
of a pretrained model's dataset-level statistics.

A FedSGD client sends only a gradient: its buffers are never used. Yin et al.'s dataset-level prior (the
batch's statistics at the global weights should look like the global model's running statistics, source
``"global"``) is used only when those statistics are informative, i.e. the global model has been trained (its
buffers are not the initial 0 / 1); otherwise there is no prior, and the reconstruction says so
(``extras["bn_prior"] = None``).

The distance, per layer and channel: the mean's error in units of the target's standard deviation, squared, plus
the variance's relative error, squared; averaged over channels and layers (scale-free, so one weight serves every
layer).

The weight (``MatchConfig.bn_weight`` = 0.1, beside the cosine distance of the ``fedavg`` preset) on measured runs,
one seed, CPU, 2 shared cores:

- CIFAR-10 (the shared train tarball), ``convnet:16`` in train mode, FedAvg: two updates of n = 4 records, E = 1,
  b = 2 (2 local steps), 8 images, **300 Adam steps** (the 2,000 of the preset took ~1 h per run here; not run):
  median PSNR 8.38 dB without the prior, 8.54 with weight 0.1, 8.30 with 1 (means 8.37 / 8.62 / 8.97); 0 of 8
  rebuilt in every case, all below the dataset-mean image's 13.13 dB. At this budget the prior changes nothing
  that matters: the attack rebuilds nothing either way.
  ``run_inversion(dataset="imagefolder:.../cifar10-train-jpeg.tar.gz", model="convnet:16", attack="fedavg",
  num_images=8, batch_size=4, local_epochs=1, local_batch_size=2, iterations=300, seed=0,
  options={"bn_prior": "off"})`` or ``{"bn_weight": W}`` (= ``fedleak invert ... --iterations 300 [--bn-prior off]``).
- digits, one 3x3 conv (4 channels, no bias) + BatchNorm + linear, FedAvg over 2 records in 2 steps of 1, 100
  Adam steps, mean PSNR of the 2 records, starts 0 / 1: 15.45 / 16.37 dB without, 16.12 / 17.22 with 0.1, 15.60 /
  13.45 with 1. Here each step's batch is one record whose brightness and contrast the gradient cannot see
  (BatchNorm removes them; the conv has no bias), and the sent buffers pin them. 4 records in 2 steps of 2 (three
  starts): mean 13.10 without, 13.35 with 0.01, 13.36 with 0.1, 12.51 with 1. A weight of 1 pulls the early,
  random dummies too hard.

    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    >>> w0 = {k: v.clone() for k, v in net.state_dict().items()}
    >>> x = torch.randn(2, 3, 8, 8)
    >>> _ = net(x)                                    # one local step's forward in train mode
    >>> sent = {k: v.clone() for k, v in net.named_buffers()}
    >>> layers = batchnorm_layers(net, w0)
    >>> targets = update_targets(layers, w0, sent)
    >>> from fedleak.attacks.inversion.replay import recording_batchnorm
    >>> with recording_batchnorm(net) as stats:
    ...     _ = net(x)
    >>> float(prior_value(BNPrior("update", layers), stats, targets)) < 1e-10
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from fedleak.attacks.inversion.replay import BNStats
from fedleak.errors import FedleakInputError
from fedleak.fl.update import ClientUpdate

BN_PRIOR_MODES = ("auto", "off")


@dataclass(frozen=True)
class BNLayer:
    """One BatchNorm layer with running statistics: its name, momentum (None: cumulative average) and the count
    of batches its buffers had averaged in w0 (used only by the cumulative average)."""

    name: str
    momentum: float | None
    tracked: int


@dataclass(frozen=True)
class BNPrior:
    """Which prior an attack uses: ``source`` "update" (the buffers the client sent) or "global" (the global
    model's running statistics, Yin et al.'s dataset-level prior), over ``layers``."""

    source: str
    layers: tuple[BNLayer, ...]


def batchnorm_layers(module: nn.Module, global_state: dict[str, Tensor]) -> tuple[BNLayer, ...]:
    """The BatchNorm layers of ``module`` whose running statistics are in ``global_state``, in module order."""
    out = []
    for name, mod in module.named_modules():
        if not isinstance(mod, _BatchNorm):
            continue
        prefix = f"{name}." if name else ""
        if f"{prefix}running_mean" not in global_state or f"{prefix}running_var" not in global_state:
            continue
        nbt = global_state.get(f"{prefix}num_batches_tracked")
        out.append(BNLayer(name, None if mod.momentum is None else float(mod.momentum), int(nbt or 0)))
    return tuple(out)


def _key(layer: str, buf: str) -> str:
    return f"{layer}.{buf}" if layer else buf


def running_weights(layer: BNLayer, calls: int) -> tuple[float, list[float]]:
    """(a_0, [w_1 .. w_E]) with running_E = a_0 running_0 + sum_e w_e stat_e after ``calls`` train-mode calls.

    >>> a0, w = running_weights(BNLayer("bn", 0.1, 0), 2)
    >>> round(a0, 4), [round(v, 4) for v in w]
    (0.81, [0.09, 0.1])
    >>> running_weights(BNLayer("bn", None, 0), 2)  # cumulative average: the plain mean of the two
    (0.0, [0.5, 0.5])
    """
    factors = [layer.momentum if layer.momentum is not None else 1.0 / (layer.tracked + e + 1) for e in range(calls)]
    weights, keep = [0.0] * calls, 1.0
    for e in reversed(range(calls)):
        weights[e] = factors[e] * keep
        keep *= 1.0 - factors[e]
    return keep, weights


def predict_running(layers: Sequence[BNLayer], global_state: dict[str, Tensor], stats: BNStats) -> dict[str, Tensor]:
    """The running buffers a train-mode client ends with, from w0's buffers and the replay's recorded statistics
    (one event per BatchNorm call, in call order): ``{"<layer>.running_mean": ..., "<layer>.running_var": ...}``."""
    out = {}
    for layer in layers:
        events = [(m, v) for _, name, m, v in stats if name == layer.name]
        if not events:
            raise FedleakInputError(f"BatchNorm layer {layer.name!r} was not called in the replay; no prior for it")
        a0, w = running_weights(layer, len(events))
        for i, buf in enumerate(("running_mean", "running_var")):
            r0 = global_state[_key(layer.name, buf)].to(events[0][i])
            out[_key(layer.name, buf)] = a0 * r0 + sum(wi * ev[i] for wi, ev in zip(w, events, strict=True))
    return out


def update_targets(layers: Sequence[BNLayer], global_state: dict[str, Tensor], sent: dict[str, Tensor]) -> list[Tensor]:
    """Per layer (w0's running mean, w0's running var, the sent running mean, the sent running var): the
    tensors the "update" prior compares its prediction with (stack them over updates to batch targets)."""
    out = []
    for layer in layers:
        for src in (global_state, sent):
            out += [src[_key(layer.name, "running_mean")].detach(), src[_key(layer.name, "running_var")].detach()]
    return out


def global_targets(layers: Sequence[BNLayer], global_state: dict[str, Tensor]) -> list[Tensor]:
    """The same four tensors per layer for the "global" prior (w0's running mean and var, twice)."""
    return update_targets(layers, global_state, global_state)


def _distance(pred_mean: Tensor, pred_var: Tensor, mean: Tensor, var: Tensor) -> Tensor:
    var = var.clamp_min(torch.finfo(var.dtype).tiny ** 0.5)
    return ((pred_mean - mean).pow(2) / var + (pred_var / var - 1).pow(2)).mean()


def prior_value(prior: BNPrior, stats: BNStats, targets: Sequence[Tensor]) -> Tensor:
    """The prior for one problem: mean over layers of the per-channel distance between what the replayed batch
    implies and the targets (:func:`update_targets` / :func:`global_targets`, 4 per layer).

    "update": the weighted average of the recorded statistics over the local steps against what the sent
    buffers reveal of it, ``(running_E - a_0 running_0) / (1 - a_0)``. "global": the first step's statistics
    (at the global weights) against the global model's running statistics."""
    terms = []
    for i, layer in enumerate(prior.layers):
        mean0, var0, mean1, var1 = targets[4 * i : 4 * i + 4]
        events = [(m, v) for _, name, m, v in stats if name == layer.name]
        if not events:
            raise FedleakInputError(f"BatchNorm layer {layer.name!r} was not called in the replay; no prior for it")
        if prior.source == "global":
            terms.append(_distance(events[0][0], events[0][1], mean1, var1))
            continue
        a0, w = running_weights(layer, len(events))
        total = 1.0 - a0
        pm = sum(wi * m for wi, (m, _) in zip(w, events, strict=True)) / total
        pv = sum(wi * v for wi, (_, v) in zip(w, events, strict=True)) / total
        terms.append(_distance(pm, pv, (mean1 - a0 * mean0) / total, (var1 - a0 * var0) / total))
    return torch.stack(terms).mean()


def _informative(layers: Sequence[BNLayer], state: dict[str, Tensor]) -> bool:
    """Whether the running statistics have moved from their initial 0 / 1 (the model has been trained)."""
    for layer in layers:
        mean, var = state[_key(layer.name, "running_mean")], state[_key(layer.name, "running_var")]
        if bool((mean != 0).any()) or bool((var != 1).any()):
            return True
    return False


def choose_prior(updates: Sequence[ClientUpdate], module: nn.Module, mode: str = "auto") -> tuple[BNPrior | None, str]:
    """Which BatchNorm prior the attack can honestly use on ``updates`` (attacked together), and why.

    "update" where every update is a FedAvg delta of a train-mode client that sent its buffers and they moved;
    else "global" where the global model's running statistics are informative (trained); else none. A secure
    sum (several clients) gets none: its buffers, if any, mix clients whose batches the replay splits
    arbitrarily."""
    if mode not in BN_PRIOR_MODES:
        raise FedleakInputError(f"bn_prior {mode!r}: choose {' or '.join(BN_PRIOR_MODES)}")
    if mode == "off":
        return None, "switched off"
    u0 = updates[0]
    layers = batchnorm_layers(module, u0.global_state)
    if not layers:
        return None, "the model has no BatchNorm layer with running statistics"
    if any(u.num_clients > 1 for u in updates):
        return None, "a secure sum of several clients: their batches cannot be told apart"
    names = [_key(layer.name, b) for layer in layers for b in ("running_mean", "running_var")]
    sent = [
        u.kind == "delta" and u.train_mode and u.buffers is not None and all(k in u.buffers for k in names)
        for u in updates
    ]
    if all(sent) and all(
        any(not torch.equal(u.buffers[k], u.global_state[k]) for k in names)  # type: ignore[index]
        for u in updates
    ):
        return BNPrior("update", layers), "the running statistics the client sent with its update"
    if all(_informative(layers, u.global_state) for u in updates):
        return BNPrior("global", layers), "the global model's running statistics (a dataset-level prior)"
    return None, "the global model's running statistics are at their initial 0 / 1 (untrained): no prior"


def prior_targets(prior: BNPrior, update: ClientUpdate) -> list[Tensor]:
    """The target tensors of one update for ``prior`` (4 per layer)."""
    if prior.source == "update":
        assert update.buffers is not None
        return update_targets(prior.layers, update.global_state, update.buffers)
    return global_targets(prior.layers, update.global_state)


__all__ = [
    "BN_PRIOR_MODES",
    "BNLayer",
    "BNPrior",
    "batchnorm_layers",
    "choose_prior",
    "global_targets",
    "predict_running",
    "prior_targets",
    "prior_value",
    "running_weights",
    "update_targets",
]
