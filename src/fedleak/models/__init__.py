"""The architectures the literature attacks, by spec (``lenet``, ``convnet:64``, ``resnet20``, ``mlp:256,128``).

>>> import fedleak
>>> spec = fedleak.data.load("photos").spec
>>> model = fedleak.models.build("lenet", spec, seed=0)
>>> model(fedleak.data.load("photos").inputs([0])).shape
torch.Size([1, 8])
"""

from fedleak.models.registry import MODELS, build
from fedleak.models.weights import load_weights, save_weights

__all__ = ["MODELS", "build", "load_weights", "save_weights"]
