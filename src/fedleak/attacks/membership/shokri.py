"""Shokri et al. (2017): shadow models and one attack classifier per class.

K shadow models of the target's architecture train on halves of the shadow data (so every shadow record is
IN for half of them); their prediction vectors on the shadow records, labelled in / out, train one attack
classifier per class (a small MLP on the log-probability vector); the classifier of each record's class then
scores the target's prediction on it. The per-class classifiers train together as one stacked tensor program.

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


def attack_features(logits: Tensor) -> Tensor:
    """What the attack classifier sees: the prediction vector as log-probabilities (clamped)."""
    return F.log_softmax(logits.float(), -1).clamp_min(-30.0)


@dataclass
class AttackClassifier:
    """One small MLP per class (stacked): features (F,) -> membership logit."""

    w1: Tensor  # (C, F, H)
    b1: Tensor  # (C, H)
    w2: Tensor  # (C, H)
    b2: Tensor  # (C,)
    mean: Tensor  # (F,)
    std: Tensor  # (F,)

    def _logits(self, feats: Tensor, cls: Tensor, w1: Tensor, b1: Tensor, w2: Tensor, b2: Tensor) -> Tensor:
        z = (feats - self.mean) / self.std
        h = torch.relu(torch.einsum("nf,cfh->cnh", z, w1) + b1[:, None, :])  # every class's net on every row
        out = torch.einsum("cnh,ch->cn", h, w2) + b2[:, None]
        return out.gather(0, cls.view(1, -1)).squeeze(0)

    def score(self, feats: Tensor, cls: Tensor) -> Tensor:
        with torch.no_grad():
            return self._logits(feats, cls.to(feats.device), self.w1, self.b1, self.w2, self.b2)

    @classmethod
    def fit(
        cls,
        feats: Tensor,
        classes: Tensor,
        member: Tensor,
        num_classes: int,
        hidden: int = 64,
        steps: int = 300,
        lr: float = 1e-2,
        weight_decay: float = 1e-4,
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
        clf = cls(*[p.detach() for p in params], mean, std)
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
        target = member.to(dev).float()
        classes = classes.to(dev)
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            out = clf._logits(feats, classes, *params)
            F.binary_cross_entropy_with_logits(out, target).backward()
            opt.step()
        return cls(*[p.detach() for p in params], mean, std)


def shokri_scores(
    ctx: MembershipContext,
    shadow_data: str = "population",
    shadows: int | None = None,
    hidden: int = 64,
    steps: int = 300,
    **options: object,
) -> Tensor:
    """Scores of Shokri's attack on the context's records; ``shadows`` defaults to the reference count."""
    k = shadows or ctx.reference_count("Shokri's attack", least=2)
    if k < 2:
        ctx.reference_count("Shokri's attack", least=2)
    source = SHADOW_DATA.get(shadow_data)
    g = torch.Generator().manual_seed(ctx.seed * 7 + 5)
    sx, sy = source(ctx, g, **options)
    sx, sy = sx.to(ctx.device), sy.to(ctx.device)
    masks = balanced_masks(k, len(sx), seed=ctx.seed + 3)
    refs = ctx._memo(
        f"shadows_{shadow_data}_{k}", lambda: ctx.train(sx, sy, masks, f"shadow-{shadow_data}", 20_000)
    )
    feats = attack_features(refs.logits(sx))  # (K, ns, C)
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
    return clf.score(attack_features(ctx.target_logits()), ctx.records.y.to(feats.device))


attack("shokri", "Shokri et al. 2017: shadow models and one attack classifier per class", "shadow")(
    shokri_scores
)
