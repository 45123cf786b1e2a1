"""Analytic attacks: exact, instant reconstructions read straight off a gradient.

A fully connected layer with a bias, fed the flattened input x, has dL/dW_i = dL/db_i * x for every unit i
of one record: any row with a non-zero bias gradient returns x exactly (Phong et al. 2017).

    >>> import fedleak
    >>> data = fedleak.data.load("digits")
    >>> model = fedleak.models.build("mlp", data.spec, seed=0)
    >>> rec = linear_leak(fedleak.fl.client_update(model, data.subset([5])))
    >>> float(fedleak.metrics.psnr(rec.pixels, data.pixels([5]))[0]) > 100
    True
"""

from __future__ import annotations

import math
import time

import torch
from torch import Tensor

from fedleak.attacks.inversion.labels import last_layer, recover_labels
from fedleak.attacks.inversion.record import Reconstruction
from fedleak.errors import FedleakInputError
from fedleak.fl.update import ClientUpdate


def first_linear(payload: dict[str, Tensor], in_features: int) -> tuple[str, str]:
    """(weight, bias) names of the first fully connected layer with a bias that sees the whole input."""
    for name, t in payload.items():
        bias = name[: -len("weight")] + "bias"
        if name.endswith("weight") and t.dim() == 2 and t.shape[1] == in_features and bias in payload:
            return name, bias
    raise FedleakInputError(
        "attack 'analytic' needs a fully connected first layer with a bias (e.g. --model mlp); "
        "for convolutional models use idlg, ig or imprint"
    )


def invert_linear(grad_w: Tensor, grad_b: Tensor) -> Tensor:
    """x = dL/dW_i / dL/db_i for the unit with the largest |dL/db_i| (exact for one record).

    >>> x = torch.tensor([0.5, -2.0, 3.0]); gb = torch.tensor([0.1, -0.7])
    >>> invert_linear(gb[:, None] * x, gb).tolist()
    [0.5, -2.0, 3.0]
    """
    i = grad_b.abs().argmax()
    return grad_w[i] / grad_b[i]


def linear_leak(update: ClientUpdate) -> Reconstruction:
    """Phong et al.'s attack: one record per update (the mean gradient of a batch gives a mixture)."""
    t0 = time.perf_counter()
    spec = update.data_spec
    if spec is None:
        raise FedleakInputError("attack 'analytic' needs the data format (data_spec) of the update")
    if update.kind != "gradient":
        raise FedleakInputError("attack 'analytic' reads a FedSGD gradient; this update is a FedAvg delta")
    w, b = first_linear(update.payload, math.prod(spec.shape))
    x = invert_linear(update.payload[w].double(), update.payload[b].double()).view(1, *spec.shape)
    lw, lb = last_layer(update.payload, spec.num_classes)
    labels = update.labels
    method = "granted"
    if labels is None and lw is not None:
        labels, method = recover_labels(update.payload, lw, lb, 1), "analytic"
    x = x.float().cpu()
    return Reconstruction(
        attack="analytic",
        inputs=x,
        pixels=spec.denormalize(x).clamp(0, 1) if spec.modality == "image" else x,
        labels=None if labels is None else labels.cpu(),
        objective=torch.zeros(1),
        seconds=time.perf_counter() - t0,
        label_method=method,
        extras={"layer": w},
    )


__all__ = ["first_linear", "invert_linear", "linear_leak"]
