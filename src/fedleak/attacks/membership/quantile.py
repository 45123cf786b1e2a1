"""Membership without reference models: quantile regression (after Bertran et al., NeurIPS 2023, "Scalable
membership inference attacks via quantile regression").

A record's score under the target (its logit-scaled confidence in the true class) varies a lot from record to
record whether or not it was trained on: an easy record scores high anyway. LiRA and RMIA calibrate each record
with reference models; here a regression fitted on population records (which the target never saw) predicts,
from a record alone (its features and label), where its score would fall as a non-member: a mean and a spread,
i.e. every quantile of a Gaussian. A record's membership score is how far above its own predicted non-member
distribution it lies, ``(s(x) - mu(x)) / sigma(x)``, so one global threshold is a per-record quantile threshold.
No model is trained like the target.

Choices, measured on the digits protocol of ``fedleak mia`` (500 members, 500 non-members, 797 population
records, seeds 0-2; TPR at 1% FPR): the regressor is k-nearest-neighbour regression within the record's class
(k = 30, Euclidean on the model's inputs), the nonparametric quantile regression that a few hundred population
records support: 0.012 / 0.010 / 0.028 against the loss threshold's 0.008 / 0.010 / 0.014. Gradient-boosted
mean and spread regressors on the same features gave 0.008 / 0.008 / 0.014 (no better than the loss), k = 10
and k = 50 were less steady, and neighbours in the target's hidden representation no better. The Gaussian
form rather than one pinball-loss fit per FPR: a small population cannot pin a 99% quantile per record, a mean
and a spread can, and give every FPR at once. On a target that leaks this little, every one of these is within
the other's 95% interval: the attack is the cheap first step of an audit, not its last word.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from fedleak.attacks.membership.context import MembershipContext
from fedleak.attacks.membership.registry import attack


def logit_confidence(logits: Tensor, y: Tensor) -> Tensor:
    """log p_y - log(1 - p_y), computed stably from the logits (LiRA's statistic)."""
    logits = logits.double()
    y = y.to(logits.device).long()
    true = logits.gather(1, y[:, None])[:, 0]
    others = logits.clone()
    others.scatter_(1, y[:, None], float("-inf"))
    return true - torch.logsumexp(others, 1)


def knn_quantile_scores(
    scores: Tensor, x: Tensor, y: Tensor, pop_scores: Tensor, pop_x: Tensor, pop_y: Tensor, k: int = 30
) -> Tensor:
    """(s - mu(x)) / sigma(x), with mu and sigma the mean and spread of the scores of x's k nearest population
    records of its class (spread floored at a tenth of the class's spread, so a tight neighbourhood cannot blow a
    record's score up)."""
    from sklearn.neighbors import NearestNeighbors

    f, fp = x.detach().double().flatten(1).cpu().numpy(), pop_x.detach().double().flatten(1).cpu().numpy()
    s, sp = scores.double().cpu().numpy(), pop_scores.double().cpu().numpy()
    yy, py = y.cpu().numpy(), pop_y.cpu().numpy()
    out = np.empty(len(s))
    for c in np.unique(yy):
        here, ref = yy == c, py == c
        if ref.sum() < 2:  # a class the population lacks: the global non-member distribution
            out[here] = (s[here] - sp.mean()) / max(sp.std(), 1e-12)
            continue
        nn_ = NearestNeighbors(n_neighbors=min(k, int(ref.sum()))).fit(fp[ref])
        near = sp[ref][nn_.kneighbors(f[here], return_distance=False)]
        out[here] = (s[here] - near.mean(1)) / (near.std(1) + 0.1 * sp[ref].std() + 1e-12)
    return torch.from_numpy(out)


@attack("quantile", "quantile regression on public data (Bertran et al. 2023): no reference models")
def _quantile(ctx: MembershipContext, k: int = 30, **_: object) -> Tensor:
    pop = ctx.need_population("quantile", least=20)
    s = logit_confidence(ctx.target_logits(), ctx.records.y)
    s_pop = logit_confidence(ctx.target_population_logits(), pop.y)
    return knn_quantile_scores(s, ctx.records.x, ctx.records.y, s_pop, pop.x, pop.y, k=k)
