"""Membership in federated learning, from the server's view.

- In the final global model: it is a trained model like any other; call :func:`membership_scores` on it.
- In one client's data, from the update that client sent (a :class:`fedleak.fl.ClientUpdate`): the server
  holds w0 (what it sent) and the payload. For a FedAvg delta, a record the client trained on lost more loss
  between w0 and w1 = w0 + delta (``loss-drop``); for a FedSGD gradient, a record's own gradient at w0 points
  along the client's gradient (``gradient-alignment``, the cosine of the two).

    >>> import fedleak
    >>> data = fedleak.data.load("digits")
    >>> model = fedleak.models.build("mlp", data.spec, seed=0)
    >>> update = fedleak.fl.client_update(model, data.subset(range(40)), local_epochs=20, lr=0.1)
    >>> x, y = data.tensors(range(80))
    >>> s = update_scores(update, x, y)
    >>> bool(s[:40].mean() > s[40:].mean())          # the client's 40 records lost more loss
    True
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from fedleak.errors import FedleakInputError
from fedleak.fl.local import predict_logits
from fedleak.fl.update import ClientUpdate
from fedleak.registry import Registry

UPDATE_SIGNALS: Registry = Registry("update membership signal")


def _model(update: ClientUpdate, state: dict[str, Tensor]) -> nn.Module:
    from fedleak.models import build

    if update.data_spec is None:
        raise FedleakInputError("membership from an update needs the update's data_spec (the record format)")
    dev = next(iter(update.global_state.values())).device
    net = build(update.model, update.data_spec, seed=0, device=dev)
    net.load_state_dict(state)
    return net.eval()


@UPDATE_SIGNALS.register("loss-drop", "loss at w0 minus loss at w0 + delta (FedAvg deltas)")
def loss_drop(update: ClientUpdate, x: Tensor, y: Tensor) -> Tensor:
    if update.kind != "delta":
        raise FedleakInputError("loss-drop needs a FedAvg update (w1 - w0); use gradient-alignment for FedSGD")
    w0 = update.global_state
    w1 = {k: (v + update.payload[k].to(v.device)) if k in update.payload else v for k, v in w0.items()}
    if update.buffers:
        w1.update({k: v for k, v in update.buffers.items() if k in w1})
    y = y.to(next(iter(w0.values())).device)
    before = F.cross_entropy(predict_logits(_model(update, w0), x), y, reduction="none")
    after = F.cross_entropy(predict_logits(_model(update, w1), x), y, reduction="none")
    return before - after


@UPDATE_SIGNALS.register("gradient-alignment", "cosine of each record's gradient at w0 with the sent gradient")
def gradient_alignment(update: ClientUpdate, x: Tensor, y: Tensor, batch_size: int = 256) -> Tensor:
    net = _model(update, update.global_state)
    params = {n: p.detach() for n, p in net.named_parameters() if n in update.payload}
    bufs = {n: b for n, b in net.named_buffers()}
    # the direction the record's own training would move the weights: -grad at w0 (delta) or +grad (gradient)
    sent = torch.cat([update.payload[n].flatten() for n in params])
    if update.kind == "delta":
        sent = -sent

    def loss(p: dict[str, Tensor], xi: Tensor, yi: Tensor) -> Tensor:
        out = functional_call(net, (p, bufs), (xi.unsqueeze(0),))
        return F.cross_entropy(out, yi.unsqueeze(0))

    per = vmap(grad(loss), in_dims=(None, 0, 0))
    dev = sent.device
    out = []
    for i in range(0, len(x), batch_size):
        g = per(params, x[i : i + batch_size].to(dev), y[i : i + batch_size].to(dev))
        flat = torch.cat([g[n].flatten(1) for n in params], 1)
        out.append(F.cosine_similarity(flat, sent.view(1, -1), dim=1))
    return torch.cat(out)


def update_scores(update: ClientUpdate, x: Tensor, y: Tensor, signal: str | None = None) -> Tensor:
    """Scores (higher = more likely in this client's data) for records (x, y) from one client's update.
    ``signal`` defaults to loss-drop for deltas and gradient-alignment for gradients."""
    name = signal or ("loss-drop" if update.kind == "delta" else "gradient-alignment")
    return UPDATE_SIGNALS.get(name)(update, x, y)


# --- membership in one client's data from every round the server saw (FedMIA-style, Zhu et al. 2024) ---------


def _round_signals(updates: Sequence[ClientUpdate], x: Tensor, y: Tensor, signal: str | None) -> dict[int, Tensor]:
    """Each client's signal on the records in one round: {client: (n,)}."""
    out = {}
    for u in updates:
        if u.client is None:
            raise FedleakInputError("federation membership needs per-client updates (no secure aggregation)")
        s = update_scores(u, x, y, signal).detach().double().cpu()
        if not torch.isfinite(s).all():
            raise FedleakInputError(f"client {u.client}, round {u.round}: non-finite update signal")
        out[int(u.client)] = s
    return out


FEDERATION_CALIBRATIONS: Registry = Registry("federation membership calibration")
FEDERATION_CALIBRATIONS.register(
    "others", "each round: the target client's signal minus the other clients' mean on the same record (FedMIA)"
)(lambda target, others: target - others.mean(0))
FEDERATION_CALIBRATIONS.register(
    "others-z", "each round: the target client's signal as a z-score among the other clients' on the record"
)(lambda target, others: (target - others.mean(0)) / others.std(0).clamp_min(1e-8))
FEDERATION_CALIBRATIONS.register(
    "global", "each round: the target client's signal against that round's global model alone (loss drop)"
)(lambda target, others: target)


def federation_scores(
    rounds: Sequence[Sequence[ClientUpdate]],
    client: int,
    x: Tensor,
    y: Tensor,
    *,
    calibration: str = "others",
    signal: str | None = None,
) -> Tensor:
    """Scores (higher = more likely in ``client``'s data) for records (x, y) from every round's per-client updates
    (``rounds[r]`` = the :class:`ClientUpdate` list of round r, e.g. ``Federation.step(keep_updates=True)``).

    Per round in which the client took part, its update signal (:func:`update_scores`: loss drop from that round's
    global model w0 to the client's w1) is calibrated (``FEDERATION_CALIBRATIONS``): ``others`` turns it into a
    z-score among the other clients' signals on the same record (their updates are the non-member reference: a
    record easy for every model drops for all of them), ``global`` keeps the drop against the round's global model.
    The rounds' scores are averaged: a member stands out round after round, a non-member only by chance.

    Measured (digits, mlp, 5 IID clients of 280 records, 10 FedAvg rounds of one local epoch; members: a client's
    280 records, non-members: 397 held-out; seeds 0-1, 10 client attacks): ``others`` AUC 0.592, TPR@1% FPR 0.031
    on average; ``others-z`` 0.581 / 0.015 (four other clients give a noisy per-record spread); ``global`` 0.584 /
    0.026; the loss of the final global model on the same records 0.490 / 0.017 (``bench/mia.py --federation``).
    """
    calib = FEDERATION_CALIBRATIONS.get(calibration)
    per_round = []
    for updates in rounds:
        sig = _round_signals(updates, x, y, signal)
        if client not in sig:
            continue
        others = [s for c, s in sig.items() if c != client]
        if calibration.startswith("others") and len(others) < (2 if calibration == "others-z" else 1):
            raise FedleakInputError(
                f"calibration {calibration!r} needs more clients besides {client} in each round; use 'global'"
            )
        per_round.append(calib(sig[client], torch.stack(others) if others else None))
    if not per_round:
        raise FedleakInputError(f"client {client} sent no update in the rounds given; pick a client that took part")
    return torch.stack(per_round).mean(0)
