"""The reference-free quantile attack calibrates each record by its neighbourhood among population records: when
a record's non-member score depends on where it lies (easy and hard regions), the raw score barely separates
members, the calibrated one does; and it runs end to end without reference models."""

from __future__ import annotations

import torch

from fedleak.attacks.membership.quantile import knn_quantile_scores, logit_confidence
from fedleak.metrics import roc_report


def test_calibration_removes_record_difficulty():
    g = torch.Generator().manual_seed(0)

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = torch.rand(n, 2, generator=g) * 10
        y = (x[:, 0] > 5).long()
        difficulty = 4 * torch.sin(x[:, 0]) + 3 * torch.cos(x[:, 1])  # the score a non-member gets there
        return x, y, difficulty + 0.3 * torch.randn(n, generator=g)

    px, py, ps = draw(3000)  # population: non-members
    x, y, s = draw(1000)
    member = torch.arange(1000) < 500
    s = s + 1.0 * member  # members score one unit higher than a non-member at the same place
    raw = roc_report(s, member)
    cal = roc_report(knn_quantile_scores(s, x, y, ps, px, py, k=30), member)
    assert raw["auc"] < 0.65  # difficulty (spread 5) swamps the member effect (1)
    assert cal["auc"] > 0.9 and cal["tpr_at_fpr"]["0.01"] > 5 * raw["tpr_at_fpr"]["0.01"]


def test_logit_confidence_is_log_odds_of_the_true_class():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, -1.0]])
    p = logits.softmax(1)
    want = torch.log(p[[0, 1], [0, 1]] / (1 - p[[0, 1], [0, 1]])).double()
    assert torch.allclose(logit_confidence(logits, torch.tensor([0, 1])), want)


def test_quantile_runs_without_reference_models():
    import fedleak
    from fedleak.fl import SGDTrainer, TrainSpec

    data = fedleak.data.load("digits")
    target = fedleak.models.build("mlp:32", data.spec, seed=0)
    SGDTrainer().train(target, *data.subset(range(200)).tensors(), TrainSpec(epochs=20), torch.Generator())
    scores = fedleak.attacks.membership_scores(
        target, data.subset(range(400)), "quantile", population=data.subset(range(400, 1000)), references=0
    )
    assert scores.shape == (400,) and torch.isfinite(scores).all()
