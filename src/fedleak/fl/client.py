"""A client's round: from the global model and its local data to the :class:`ClientUpdate` it sends.

>>> import fedleak
>>> data = fedleak.data.load("digits")
>>> model = fedleak.models.build("mlp", data.spec, seed=0)
>>> u = fedleak.fl.client_update(model, data.subset([3, 17]))          # FedSGD: one gradient
>>> u.kind, u.num_samples, u.batch_size
('gradient', 2, 2)
>>> u = fedleak.fl.client_update(model, data.subset(range(40)), local_steps=5, batch_size=8, lr=0.1)
>>> u.kind, u.local_steps
('delta', 5)
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from fedleak.data.dataset import Dataset
from fedleak.fl.local import LocalTrainer, SGDTrainer, TrainSpec
from fedleak.fl.update import ClientUpdate, ThreatModel
from fedleak.models.user import live_spec

UpdateTransform = Callable[[ClientUpdate, torch.Generator], ClientUpdate]


def parameter_names(model: nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]


def client_update(
    model: nn.Module,
    data: Dataset | tuple[Tensor, Tensor],
    *,
    local_steps: int | None = None,
    local_epochs: int | None = None,
    batch_size: int | None = None,
    lr: float = 0.1,
    seed: int = 0,
    train_mode: bool = True,
    threat: ThreatModel | None = None,
    trainer: LocalTrainer | None = None,
    transforms: Sequence[UpdateTransform] = (),
    client: int | None = None,
    round: int | None = None,
) -> ClientUpdate:
    """Run one client's local work on a copy of ``model`` and return what the server receives.

    With neither ``local_steps`` nor ``local_epochs`` it is FedSGD: one gradient of the batch (all given records,
    or a seeded sample of ``batch_size``). Otherwise FedAvg: local SGD, and the payload is w1 - w0.
    ``transforms`` (client-side defenses such as clipping or pruning) apply to the payload before it is sent;
    ``threat`` decides which metadata the server sees (default: all but the labels); ``trainer`` replaces the
    honest client's SGD (e.g. DP-SGD).
    """
    trainer = trainer or SGDTrainer()
    if isinstance(data, Dataset):
        x, y, spec = *data.tensors(), data.spec
    else:
        (x, y), spec = data, None
    dev = next(model.parameters()).device
    x, y = x.to(dev), y.to(dev)
    sent_labels = y
    lm_targets = getattr(model, "training_targets", None)  # a language model trains on its own next tokens
    if callable(lm_targets):
        y = lm_targets(x)
    g = torch.Generator().manual_seed(seed)
    global_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    names = parameter_names(model)
    local = copy.deepcopy(model)
    local.train(train_mode)
    if local_steps is None and local_epochs is None:
        if batch_size is not None and batch_size < len(x):
            pick = torch.randperm(len(x), generator=g)[:batch_size].sort().values.to(dev)
            x, y, sent_labels = x[pick], y[pick], sent_labels[pick]
        payload = trainer.gradient(local, x, y, g)
        kind, steps, b, step_lr = "gradient", None, len(x), None
    else:
        b = min(batch_size or 32, len(x))
        spec_t = TrainSpec(epochs=local_epochs or 1, steps=local_steps, batch_size=b, lr=lr)
        steps = trainer.train(local, x, y, spec_t, g)
        new = dict(local.named_parameters())
        payload = {n: (new[n].detach() - global_state[n]).clone() for n in names}
        kind, step_lr = "delta", lr
    buffers = {k: v.detach().clone() for k, v in local.named_buffers()} or None
    update = ClientUpdate(
        model=live_spec(model),
        global_state=global_state,
        payload=payload,
        kind=kind,
        num_samples=len(x),
        local_steps=steps,
        local_lr=step_lr,
        batch_size=b,
        labels=sent_labels.detach().clone(),
        data_spec=spec,
        client=client,
        round=round,
        train_mode=train_mode,
        buffers=buffers,
    )
    for t in transforms:
        update = t(update, g)
    return (threat or ThreatModel()).view(update)
