"""Shokri et al. (2017): shadow models and an attack classifier trained on their outputs.

K shadow models of the target's architecture train on random subsets of the shadow data, each the size of the
target's training set; their prediction vectors on the shadow records, labelled in / out, train the attack
classifier, which then scores the target's prediction on each record. Two attack classifiers:

- ``gbt`` (the default): one gradient-boosted tree model (scikit-learn's ``HistGradientBoostingClassifier``,
  early stopping on a held-out fifth of the shadow rows) over all classes, the record's label one-hot among its
  features. One model sees every class's rows (Shokri's per-class models see a tenth each on ten classes) and
  trees cut the non-monotone in / out pattern of a fitted model's confidence: its members sit at or above a
  floor that many non-members fall below, while among the most confident records members and non-members are
  about as frequent, so membership is likeliest just above the floor, not at the top (a threshold ranks the
  top first; the small per-class MLPs smooth the band over). Default features ``sorted``: the
  log-probabilities sorted, the true class's log(p / (1 - p)) and the label.
- ``per-class-mlp``: Shokri's own design, one attack model per class (an MLP with 16 hidden units on the
  per-class log(p / (1 - p)) vector, ``features="logit"``), all classes trained together as one stacked tensor
  program (rows grouped by class and padded, two ``bmm`` per step).

On the classic tabular protocol (MLP 128 fitted to 100% on 1,000 MNIST digits, 4 shadows; bench/mia.py) the
default reaches AUC 0.71 / 0.69 / 0.70 on seeds 0 / 1 / 2 where the per-class MLPs reach 0.66 / 0.62 / 0.65 and
ART's shadow attack (random forest on the probabilities and the label) 0.67 / 0.66 / 0.68.

    >>> import torch
    >>> feats = torch.cat([torch.zeros(50, 3), torch.ones(50, 3)])
    >>> member, cls = torch.arange(100) >= 50, torch.zeros(100, dtype=torch.long)
    >>> clf = AttackClassifier.fit(feats, cls, member, num_classes=1, steps=100, seed=0)
    >>> bool(clf.score(torch.ones(1, 3), torch.tensor([0])) > clf.score(torch.zeros(1, 3), torch.tensor([0])))
    True
    >>> gbt = BoostedAttack.fit(feats, member, seed=0)
    >>> bool(gbt.score(torch.ones(1, 3)) > gbt.score(torch.zeros(1, 3)))
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
from fedleak.attacks.membership.signals import scaled_logit
from fedleak.errors import FedleakInputError

FEATURES = ("sorted", "logit", "logprob", "prob")
CLASSIFIERS = ("gbt", "per-class-mlp")


def attack_features(logits: Tensor, kind: str = "logit", y: Tensor | None = None) -> Tensor:
    """What the attack classifier sees of a prediction: the probabilities (Shokri's ``prob``), the
    log-probabilities (``logprob``), per-class log(p / (1 - p)) (``logit``: it spreads the near-1 confidences
    of a fitted model, where members and non-members differ) or ``sorted``: the log-probabilities in
    decreasing order and the true class's log(p / (1 - p)) (needs the labels ``y``; computed in float64 and
    stably, so that confidences within 1e-7 of 1, where a fitted model's members sit, stay apart).

        >>> z, y = torch.tensor([[30.0, 0.0, 10.0]]), torch.tensor([2])
        >>> attack_features(z, "sorted", y).round().int().tolist()  # log p sorted, then log(p_y / (1 - p_y))
        [[0, -20, -30, -20]]
    """
    if kind == "sorted":
        if y is None:
            raise FedleakInputError("Shokri features='sorted' needs the records' labels")
        z = logits.double()
        logp = F.log_softmax(z, -1).sort(-1, descending=True).values.clamp_min(-100.0)
        return torch.cat([logp, scaled_logit(z, y).clamp(-100.0, 100.0).unsqueeze(-1)], -1).float()
    logp = F.log_softmax(logits.float(), -1)
    if kind == "prob":
        return logp.exp()
    if kind == "logprob":
        return logp.clamp_min(-30.0)
    if kind == "logit":
        return (logp - torch.log1p(-logp.exp().clamp(max=1 - 1e-7))).clamp(-30.0, 30.0)
    raise FedleakInputError(f"Shokri features={kind!r}: choose {', '.join(FEATURES)}")


@dataclass
class BoostedAttack:
    """One gradient-boosted tree model over all classes: features (F,) -> membership score (the log-odds).

    Small trees (7 leaves, at least 50 rows each) at a slow rate (0.03), boosting stopped when the log-loss
    on a held-out fifth of the rows has not improved for 30 rounds (at most 600). These settings were picked
    among five tried on the tabular protocol's seeds 0-2 (bench/mia.py; digits and breast-cancer as checks),
    whose mean AUCs lay within 0.02 of each other; they are kept for every dataset. The same ``seed`` gives
    the same scores (checked on one thread; the trees are fitted on the CPU whatever the device).
    """

    model: object  # sklearn HistGradientBoostingClassifier

    @classmethod
    def fit(cls, feats: Tensor, member: Tensor, seed: int = 0, max_iter: int = 600) -> BoostedAttack:
        from sklearn.ensemble import HistGradientBoostingClassifier

        x = feats.detach().cpu().double().numpy()
        target = member.detach().cpu().numpy().astype(int)
        if len(set(target.tolist())) < 2:
            raise FedleakInputError("Shokri's attack classifier needs shadow members and non-members")
        model = HistGradientBoostingClassifier(
            learning_rate=0.03,
            max_iter=max_iter,
            max_leaf_nodes=7,
            min_samples_leaf=min(50, max(1, len(x) // 20)),
            early_stopping=len(x) >= 200,
            validation_fraction=0.2,
            n_iter_no_change=30,
            random_state=seed % 2**32,
        )
        return cls(model.fit(x, target))

    def score(self, feats: Tensor) -> Tensor:
        s = self.model.decision_function(feats.detach().cpu().double().numpy())  # type: ignore[attr-defined]
        return torch.as_tensor(s, dtype=torch.float32, device=feats.device)


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


def _with_label(feats: Tensor, y: Tensor, num_classes: int) -> Tensor:
    return torch.cat([feats, F.one_hot(y, num_classes).to(feats.dtype)], -1)


def shokri_scores(
    ctx: MembershipContext,
    shadow_data: str = "population",
    shadows: int | None = None,
    hidden: int = 16,
    steps: int = 300,
    features: str | None = None,
    shadow_size: int | None = None,
    classifier: str = "gbt",
    **options: object,
) -> Tensor:
    """Scores of Shokri's attack on the context's records; ``shadows`` defaults to the reference count and
    ``shadow_size`` (records per shadow model) to the target's training-set size, taken as half the records
    (at most 80% of the shadow data), so that shadow models overfit as much as the target. ``classifier``:
    ``gbt`` (default; ``features`` default ``sorted``, the label one-hot beside them) or ``per-class-mlp``
    (Shokri's per-class models; ``features`` default ``logit``; ``hidden`` and ``steps`` size them)."""
    if classifier not in CLASSIFIERS:
        raise FedleakInputError(f"Shokri classifier={classifier!r}: choose {', '.join(CLASSIFIERS)}")
    features = features or ("sorted" if classifier == "gbt" else "logit")
    if features not in FEATURES:
        raise FedleakInputError(f"Shokri features={features!r}: choose {', '.join(FEATURES)}")
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
    shadow_logits = refs.logits(sx)  # (K, ns, C)
    num_classes = shadow_logits.shape[-1]
    classes = sy.to(shadow_logits.device).view(1, -1).expand(k, -1).flatten()
    feats = attack_features(shadow_logits.flatten(0, 1), features, classes)
    member = masks.to(feats.device).flatten()  # (K * ns,)
    target_y = ctx.records.y.to(feats.device)
    target_feats = attack_features(ctx.target_logits().to(feats.device), features, target_y)
    if classifier == "gbt":
        gbt = BoostedAttack.fit(_with_label(feats, classes, num_classes), member, seed=ctx.seed)
        return gbt.score(_with_label(target_feats, target_y, num_classes))
    clf = AttackClassifier.fit(feats, classes, member, num_classes, hidden=hidden, steps=steps, seed=ctx.seed)
    return clf.score(target_feats, target_y)


attack("shokri", "Shokri et al. 2017: shadow models and an attack classifier on their outputs", "shadow")(shokri_scores)
