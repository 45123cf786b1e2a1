"""The federated simulation. What leaves a client is a :class:`ClientUpdate`; ``fl`` knows no attack.

>>> import fedleak
>>> data = fedleak.data.load("digits")
>>> model = fedleak.models.build("lenet", data.spec, seed=0)
>>> update = fedleak.fl.client_update(model, data.subset([3, 17]))   # what the server receives
>>> sorted(update.payload)[:2]
['body.0.bias', 'body.0.weight']
"""

from fedleak.fl.client import UpdateTransform, client_update, parameter_names
from fedleak.fl.local import (
    LocalTrainer,
    SGDTrainer,
    TrainSpec,
    batch_gradient,
    evaluate,
    predict_logits,
    sgd_train,
)
from fedleak.fl.server import FedConfig, Federation, RoundResult, weighted_mean
from fedleak.fl.update import GRANTABLE, ClientUpdate, ThreatModel

__all__ = [
    "GRANTABLE",
    "ClientUpdate",
    "FedConfig",
    "Federation",
    "LocalTrainer",
    "RoundResult",
    "SGDTrainer",
    "ThreatModel",
    "TrainSpec",
    "UpdateTransform",
    "client_update",
    "evaluate",
    "batch_gradient",
    "parameter_names",
    "predict_logits",
    "sgd_train",
    "weighted_mean",
]
