"""The malicious server of "Robbing the Fed" (Fowl et al. 2022): it sends a model with an imprint block in
front, a linear layer of k "bins" that all measure the same thing (the image's mean normalised brightness)
against increasing thresholds, followed by a ReLU and a linear layer back to the image (added to it, so the
rest of the model still works). All bins fed by one image receive the same gradient factor, so the
difference of the gradients of two neighbouring bins is (factor * x, factor) for the images whose brightness
lies between their thresholds: an image alone there comes back exactly, also from a sum of several clients'
updates.

The server builds the model (:func:`imprint_model`) and records its own plan in ``ClientUpdate.extras``
(``IMPRINT_KEY``); the attack (:func:`imprint_leak`) reads only that plan, the weights it sent and the
payload.

    >>> import fedleak
    >>> data = fedleak.data.load("digits")
    >>> inner = fedleak.models.build("mlp", data.spec, seed=0)
    >>> model = imprint_model(inner, data.spec, bins=64, public=data.inputs(range(200, 400)))
    >>> u = with_plan(fedleak.fl.client_update(model, data.subset(range(8))), model)
    >>> rec = imprint_leak(u)
    >>> scores = fedleak.metrics.image_scores(rec.pixels, data.pixels(range(8)))
    >>> int((scores["psnr"] > 50).sum()) >= 4
    True
"""

from __future__ import annotations

import math
import time
from statistics import NormalDist

import torch
from torch import Tensor, nn

from fedleak.attacks.inversion.record import Reconstruction
from fedleak.data.dataset import DataSpec
from fedleak.errors import FedleakInputError
from fedleak.fl.update import ClientUpdate

IMPRINT_KEY = "imprint"


class ImprintBlock(nn.Module):
    """x -> x + reshape(W1 relu(W0 flat(x) + b0)): W0's rows all equal the measurement, -b0 the thresholds,
    W1's columns all equal one small random vector (so every bin gets the same gradient factor)."""

    def __init__(self, in_shape: tuple[int, ...], thresholds: Tensor, scale: float = 1e-3, seed: int = 0) -> None:
        super().__init__()
        d, k = math.prod(in_shape), len(thresholds)
        self.in_shape = tuple(in_shape)
        self.linear0 = nn.Linear(d, k)
        self.linear1 = nn.Linear(k, d, bias=False)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            self.linear0.weight.copy_(torch.full((k, d), 1.0 / d))
            self.linear0.bias.copy_(-thresholds.float())
            u = torch.randn(d, generator=g) * scale / math.sqrt(d)
            self.linear1.weight.copy_(u[:, None].expand(d, k))

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.linear0(x.flatten(1)))
        return x + self.linear1(h).view(-1, *self.in_shape)


class ImprintModel(nn.Module):
    def __init__(self, block: ImprintBlock, inner: nn.Module) -> None:
        super().__init__()
        self.imprint, self.net = block, inner

    def forward(self, x: Tensor) -> Tensor:
        return self.net(self.imprint(x))


def thresholds_for(bins: int, mean: float, std: float) -> Tensor:
    """Bin thresholds at the (i / (bins + 1)) quantiles of N(mean, std): each bin equally likely."""
    nd = NormalDist(mean, max(std, 1e-6))
    return torch.tensor([nd.inv_cdf(i / (bins + 1)) for i in range(1, bins + 1)], dtype=torch.float64)


def imprint_model(
    inner: nn.Module, spec: DataSpec, bins: int = 512, public: Tensor | None = None, seed: int = 0
) -> ImprintModel:
    """The server's modified model: an imprint block of ``bins`` bins in front of ``inner``. The thresholds
    follow the brightness distribution of ``public`` records (model-input space) the server holds, else
    N(0, 0.5)."""
    mean, std = 0.0, 0.5
    if public is not None and len(public) > 1:
        m = public.double().flatten(1).mean(1)
        mean, std = float(m.mean()), float(m.std())
    block = ImprintBlock(tuple(spec.shape), thresholds_for(bins, mean, std), seed=seed)
    dev = next(inner.parameters()).device
    model = ImprintModel(block, inner).to(dev)
    model.fedleak_spec = f"imprint:{bins}+{getattr(inner, 'fedleak_spec', type(inner).__name__.lower())}"  # type: ignore[attr-defined]
    return model


def with_plan(update: ClientUpdate, model: ImprintModel) -> ClientUpdate:
    """Attach the server's own plan (which parameters form the imprint bins) to an update of its model."""
    plan = {
        "weight": "imprint.linear0.weight",
        "bias": "imprint.linear0.bias",
        "bins": model.imprint.linear0.out_features,
    }
    return update.replace(extras={**update.extras, IMPRINT_KEY: plan})


def imprint_leak(update: ClientUpdate) -> Reconstruction:
    """Recover the images that sit alone between two neighbouring thresholds (exactly), one per non-empty
    interval; up to ``num_samples`` reconstructions (padded with blank images when fewer intervals are
    non-empty)."""
    t0 = time.perf_counter()
    plan = update.extras.get(IMPRINT_KEY)
    if plan is None:
        raise FedleakInputError(
            "attack 'imprint' needs an update of the malicious server's imprint model (its plan is missing)"
        )
    spec = update.data_spec
    if spec is None:
        raise FedleakInputError("attack 'imprint' needs the data format (data_spec) of the update")
    sign = -1.0 if update.kind == "delta" else 1.0
    gw = sign * update.payload[plan["weight"]].double()
    gb = sign * update.payload[plan["bias"]].double()
    order = torch.argsort(-update.global_state[plan["bias"]].double())  # increasing thresholds
    gw, gb = gw[order], gb[order]
    dw = torch.cat([gw[:-1] - gw[1:], gw[-1:]])
    db = torch.cat([gb[:-1] - gb[1:], gb[-1:]])
    found = (db.abs() > 1e-9 * db.abs().max().clamp_min(1e-300)).nonzero().flatten()
    n = update.num_samples if update.num_samples is not None else len(found)
    found = found[db[found].abs().argsort(descending=True)][:n]
    x = torch.zeros(n, math.prod(spec.shape), dtype=torch.float64, device=gw.device)
    x[: len(found)] = dw[found] / db[found, None]
    x = x.view(n, *spec.shape).float().cpu()
    return Reconstruction(
        attack="imprint",
        inputs=x,
        pixels=spec.denormalize(x).clamp(0, 1),
        labels=None,
        objective=torch.zeros(1),
        seconds=time.perf_counter() - t0,
        label_method="none",
        extras={"recovered": len(found), "bins": int(plan["bins"])},
    )


__all__ = [
    "IMPRINT_KEY",
    "ImprintBlock",
    "ImprintModel",
    "imprint_leak",
    "imprint_model",
    "thresholds_for",
    "with_plan",
]
