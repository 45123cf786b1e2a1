"""Shokri et al. (2017): shadow models and one attack classifier per class.

K shadow models of the target's architecture train on random subsets of the shadow data, each the size of the
target's training set; their prediction vectors on the shadow records, labelled in / out, train one attack
classifier per class (an MLP with 16 hidden units on the per-class log(p / (1 - p)) vector); the classifier of
each record's class then scores the target's prediction on it. The per-class classifiers train together as
one stacked tensor program (rows grouped by class and padded, two ``bmm`` per step).

    >>> import torch
    >>> feats = torch.cat([torch.zeros(50, 3), torch.ones(50, 3)])
    >>> member, cls = torch.arange(100) >= 50, torch.zeros(100, dtype=torch.long)
    >>> clf = AttackClassifier.fit(feats, cls, member, num_classes=1, steps=100, seed=0)
    >>> bool(clf.score(torch.ones(1, 3), torch.tensor([0])) > clf.score(torch.zeros(1, 3), torch.tensor([0])))
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from fedleak.attacks.membership.context import MembershipContext
from fedleak.attacks.membership.references import balanced_masks
from fedleak.attacks.membership.registry import attack
from fedleak.attacks.membership.shadowdata import SHADOW_DATA
from fedleak.errors import FedleakInputError


def attack_features(logits: Tensor, kind: str = "logit") -> Tensor:
    """What the attack classifier sees: the prediction vector, as probabilities (Shokri's ``prob``),
    log-probabilities (``logprob``) or per-class log(p / (1 - p)) (``logit``, the default: it spreads the
    near-1 confidences of a fitted model, where members and non-members differ)."""
    logp = F.log_softmax(logits.float(), -1)
    if kind == "prob":
        return logp.exp()
    if kind == "logprob":
        return logp.clamp_min(-30.0)
    if kind == "logit":
        return (logp - torch.log1p(-logp.exp().clamp(max=1 - 1e-7))).clamp(-30.0, 30.0)
    raise FedleakInputError(f"Shokri features={kind!r}: choose logit, logprob or prob")


@dataclass
class AttackClassifier:
    """One small MLP per class (stacked): features (F,) -> membership logit."""

    w1: Tensor  # (C, F, H)
    b1: Tensor  # (C, H)
    w2: Tensor  # (C, H)
    b2: Tensor  # (C,)
    mean: Tensor  # (F,)
    std: Tensor  # (F,)

    def _logits(self, feats: Tensor, cls: Tensor) -> Tensor:
        z = (feats - self.mean) / self.std
        h = torch.relu(torch.einsum("nf,cfh->cnh", z, self.w1) + self.b1[:, None, :])  # every class's net
        out = torch.einsum("cnh,ch->cn", h, self.w2) + self.b2[:, None]
        return out.gather(0, cls.view(1, -1)).squeeze(0)  # each row's own class

    def score(self, feats: Tensor, cls: Tensor, batch_size: int = 4096) -> Tensor:
        with torch.no_grad():
            cls = cls.to(feats.device)
            return torch.cat(
                [
                    self._logits(feats[i : i + batch_size], cls[i : i + batch_size])
                    for i in range(0, len(feats), batch_size)
                ]
            )

    @classmethod
    def fit(
        cls,
        feats: Tensor,
        classes: Tensor,
        member: Tensor,
        num_classes: int,
        hidden: int = 16,
        steps: int = 300,
        lr: float = 1e-2,
        weight_decay: float = 1e-3,
        seed: int = 0,
    ) -> AttackClassifier:
        """Full-batch Adam on the binary cross-entropy of every class's classifier at once."""
        g = torch.Generator().manual_seed(seed)
        dev, f = feats.device, feats.shape[1]
        mean, std = feats.mean(0), feats.std(0).clamp_min(1e-3)
        params = [
            (torch.randn(num_classes, f, hidden, generator=g) / f**0.5).to(dev),
            torch.zeros(num_classes, hidden, device=dev),
            (torch.randn(num_classes, hidden, generator=g) / hidden**0.5).to(dev),
            torch.zeros(num_classes, device=dev),
        ]
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
        # rows grouped by class and padded: (C, n_max, F), so that all classes train as two bmm per step
        classes = classes.to(dev)
        counts = torch.bincount(classes, minlength=num_classes)
        order = classes.argsort(stable=True)
        starts = torch.cumsum(counts, 0) - counts
        n_max = max(1, int(counts.max()))
        slot = torch.arange(n_max, device=dev).view(1, -1)
        valid = slot < counts.view(-1, 1)
        idx = order[(starts.view(-1, 1) + slot).clamp(max=len(order) - 1)]
        z = ((feats - mean) / std)[idx]  # (C, n_max, F)
        target = member.to(dev).float()[idx]
        w = valid.float()
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            w1, b1, w2, b2 = params
            h = torch.relu(torch.bmm(z, w1) + b1[:, None, :])
            out = torch.bmm(h, w2.unsqueeze(-1)).squeeze(-1) + b2[:, None]
            loss = F.binary_cross_entropy_with_logits(out, target, reduction="none")
            ((loss * w).sum() / w.sum()).backward()
            opt.step()
        return cls(*[p.detach() for p in params], mean, std)


def shokri_scores(
    ctx: MembershipContext,
    shadow_data: str = "population",
    shadows: int | None = None,
    hidden: int = 16,
    steps: int = 300,
    features: str = "logit",
    shadow_size: int | None = None,
    **options: object,
) -> Tensor:
    """Scores of Shokri's attack on the context's records; ``shadows`` defaults to the reference count and
    ``shadow_size`` (records per shadow model) to the target's training-set size, taken as half the records
    (at most 80% of the shadow data), so that shadow models overfit as much as the target."""
    k = shadows or ctx.reference_count("Shokri's attack", least=2)
    if k < 2:
        ctx.reference_count("Shokri's attack", least=2)
    source = SHADOW_DATA.get(shadow_data)
    g = torch.Generator().manual_seed(ctx.seed * 7 + 5)
    sx, sy = source(ctx, g, **options)
    sx, sy = sx.to(ctx.device), sy.to(ctx.device)
    size = shadow_size or min(len(ctx.records) // 2, int(0.8 * len(sx)))
    size = max(1, min(size, len(sx) - 1))
    masks = balanced_masks(k, len(sx), seed=ctx.seed + 3, fraction=0.5 if 2 * size == len(sx) else size / len(sx))
    refs = ctx._memo(
        f"shadows_{shadow_data}_{k}_{size}", lambda: ctx.train(sx, sy, masks, f"shadow-{shadow_data}", 20_000)
    )
    feats = attack_features(refs.logits(sx), features)  # (K, ns, C)
    member = masks.to(feats.device)  # (K, ns)
    classes = sy.view(1, -1).expand(k, -1)
    num_classes = feats.shape[-1]
    clf = AttackClassifier.fit(
        feats.flatten(0, 1),
        classes.flatten(),
        member.flatten(),
        num_classes,
        hidden=hidden,
        steps=steps,
        seed=ctx.seed,
    )
    return clf.score(attack_features(ctx.target_logits(), features), ctx.records.y.to(feats.device))


attack("shokri", "Shokri et al. 2017: shadow models and one attack classifier per class", "shadow")(shokri_scores)
