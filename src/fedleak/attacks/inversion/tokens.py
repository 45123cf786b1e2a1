"""Exact token-set recovery: the embedding table's gradient is non-zero exactly in the rows of the tokens the
client's batch used (``dL/dE[v] = sum of dL/de_i over the positions i holding token v``), so the server reads
the set of words off the update with no optimisation at all, for a batch as for one record. A FedAvg delta
leaks the same way: plain SGD never moves an embedding row that no local batch looked up.

    >>> import torch
    >>> payload = {"tok.weight": torch.tensor([[0.0, 0.0], [0.1, -0.2], [0.0, 0.0], [0.0, 3e-9]])}
    >>> token_set(payload, "tok.weight").tolist()
    [1, 3]
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fedleak.errors import FedleakInputError


def embedding_name(model: nn.Module, vocab_size: int | None) -> str:
    """The parameter name of a text model's token embedding: ``tok.weight`` in fedleak's text models, else the
    first 2-D parameter with one row per vocabulary entry."""
    params = dict(model.named_parameters())
    if "tok.weight" in params:
        return "tok.weight"
    for name, p in params.items():
        if p.dim() == 2 and vocab_size is not None and p.shape[0] == vocab_size:
            return name
    raise FedleakInputError("this model has no token embedding table; text inversion needs a text model")


def token_set(payload: dict[str, Tensor], name: str, rel_tol: float = 0.0) -> Tensor:
    """Sorted ids of the embedding rows whose update is non-zero (above ``rel_tol`` x the largest row)."""
    rows = payload[name].detach().abs().amax(dim=1)
    return (rows > rel_tol * rows.max()).nonzero().flatten().cpu() if rows.max() > 0 else torch.zeros(0).long()


def set_scores(true_ids: Tensor, recovered: Tensor, pad_id: int = 0) -> dict[str, float]:
    """Precision and recall of a recovered token set against the tokens actually used (PAD left out).

    >>> set_scores(torch.tensor([[0, 4, 5, 4]]), torch.tensor([0, 4, 5]))
    {'precision': 1.0, 'recall': 1.0, 'exact': 1.0}
    """
    t = set(true_ids.flatten().tolist()) - {pad_id}
    r = set(recovered.flatten().tolist()) - {pad_id}
    hit = len(t & r)
    return {
        "precision": hit / len(r) if r else float(not t),
        "recall": hit / len(t) if t else 1.0,
        "exact": float(t == r),
    }
