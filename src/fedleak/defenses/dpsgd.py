"""Sample-level DP-SGD (Abadi et al. 2016) through Opacus, as a :class:`fedleak.fl.LocalTrainer`.

``train`` (FedAvg clients, centrally trained targets) runs Opacus's ``PrivacyEngine``: Poisson sampling at
rate 1/ceil(N/B) (about B/N), per-sample clipping to norm C, Gaussian noise of std z*C on each summed batch
gradient. ``gradient`` (FedSGD clients) clips each sample's gradient of the one batch (Opacus's per-sample
gradients) and adds the same noise. Every call is recorded in a :class:`~fedleak.defenses.accounting.Ledger`,
one history per client dataset, and :meth:`DPSGDTrainer.privacy` reports the worst client's epsilon.

    >>> import torch, fedleak
    >>> data = fedleak.data.load("digits")
    >>> net = fedleak.models.build("mlp", data.spec, seed=0)
    >>> dp = DPSGDTrainer(noise=1.0, clip=1.0)
    >>> u = fedleak.fl.client_update(net, data.subset(range(64)), local_epochs=1, batch_size=16, trainer=dp)
    >>> p = dp.privacy()
    >>> p["steps"], p["sample_rate"], p["epsilon"] > 0
    (4, 0.25, True)
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedleak.defenses.accounting import ACCOUNTANTS, Ledger, calibrate_noise, check_accountant
from fedleak.errors import FedleakInputError
from fedleak.fl.local import TrainSpec, make_optimizer


def fingerprint(x: Tensor, y: Tensor) -> tuple[int, float, int]:
    """A cheap identity for a client's dataset, so that repeated rounds on it compose in one history."""
    return (len(x), round(float(x.detach().double().sum()), 6), int(y.sum()))


def prepare_model(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """Make ``model`` acceptable to Opacus: BatchNorm -> GroupNorm via ``ModuleValidator.fix``.

    Returns the (possibly new) model and notes saying what changed. The model's ``fedleak_spec`` gains
    ``norm=gn`` so that an attacker rebuilding the architecture from a :class:`ClientUpdate` gets the same
    one.
    """
    from opacus.validators import ModuleValidator

    if ModuleValidator.is_valid(model):
        return model, []
    spec = getattr(model, "fedleak_spec", None)
    fixed = ModuleValidator.fix(model)
    errors = ModuleValidator.validate(fixed, strict=False)
    if errors:
        raise FedleakInputError(f"dp-sgd: Opacus cannot train this model ({errors[0]}); choose mlp, lenet or norm=gn")
    if spec:
        fixed.fedleak_spec = spec + ("," if ":" in spec else ":") + "norm=gn"  # type: ignore[attr-defined]
    return fixed, ["BatchNorm replaced by GroupNorm (Opacus ModuleValidator.fix): DP-SGD cannot use batch statistics"]


def _device_generator(generator: torch.Generator, device: torch.device) -> torch.Generator:
    if device.type == "cpu":
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return torch.Generator(device=device).manual_seed(seed)


@dataclass
class DPSGDTrainer:
    """DP-SGD with a fixed noise multiplier, or one chosen for a target epsilon at delta.

    ``calls``: how many times one client's data will be trained on (rounds it may take part in); with a
    target epsilon the noise is calibrated for ``calls`` times the steps of one call. ``sample_rate`` is the
    rate a FedSGD client's batch is drawn at (unknown to the client: 1.0, no amplification, by default).
    """

    noise: float | None = None
    clip: float = 1.0
    target_epsilon: float | None = None
    delta: float = 1e-5
    accountant: str = "rdp"
    calls: int = 1
    sample_rate: float | None = None
    ledger: Ledger = field(default_factory=Ledger)
    notes: list[str] = field(default_factory=list)
    canaries: Any = None  # audit only: GradientCanaries joining the host client's per-sample gradients

    def __post_init__(self) -> None:
        check_accountant(self.accountant)
        if (self.noise is None) == (self.target_epsilon is None):
            raise FedleakInputError("dp-sgd: give noise=Z or epsilon=E (with delta=D), not both and not neither")
        if self.clip <= 0 or (self.noise is not None and self.noise < 0) or not 0 < self.delta < 1:
            raise FedleakInputError("dp-sgd: need clip > 0, noise >= 0 and 0 < delta < 1, e.g. dp-sgd:noise=1,clip=1")

    def noise_for(self, sample_rate: float, steps: int) -> float:
        """The noise multiplier for one call of ``steps`` steps at ``sample_rate``."""
        if self.noise is not None:
            return self.noise
        assert self.target_epsilon is not None
        return calibrate_noise(
            self.target_epsilon, self.delta, sample_rate, steps * max(1, self.calls), self.accountant
        )

    def _check(self, model: nn.Module) -> None:
        from opacus.validators import ModuleValidator

        if not ModuleValidator.is_valid(model):
            raise FedleakInputError(
                "dp-sgd: the model has layers Opacus refuses (BatchNorm); build it with norm=gn or pass it "
                "through DefensePlan.prepare(model) first"
            )

    def train(self, model: nn.Module, x: Tensor, y: Tensor, spec: TrainSpec, generator: torch.Generator) -> int:
        """Opacus DP-SGD on (x, y) in place; returns the optimiser steps taken (Poisson batches)."""
        from opacus import PrivacyEngine
        from torch.utils.data import DataLoader, TensorDataset

        self._check(model)
        n = len(x)
        b = max(1, min(spec.batch_size, n))
        loader_gen = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
        loader = DataLoader(TensorDataset(x, y), batch_size=b, shuffle=True, generator=loader_gen)
        per_epoch = len(loader)
        q = 1.0 / per_epoch
        total = spec.steps if spec.steps is not None else spec.epochs * per_epoch
        z = self.noise_for(q, total)
        dev = next(model.parameters()).device
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            engine = PrivacyEngine(accountant="rdp")
            dp_model, dp_opt, dp_loader = engine.make_private(
                module=model,
                optimizer=make_optimizer(model, spec),
                data_loader=loader,
                noise_multiplier=z,
                max_grad_norm=self.clip,
                poisson_sampling=True,
                noise_generator=_device_generator(generator, dev),
            )
            steps = 0
            try:
                while steps < total:
                    for xb, yb in dp_loader:
                        if steps >= total:
                            break
                        dp_opt.zero_grad(set_to_none=True)
                        if len(xb):
                            F.cross_entropy(dp_model(xb), yb).backward()
                        else:  # an empty Poisson batch: the step is noise only
                            for p in model.parameters():
                                if p.requires_grad:
                                    p.grad_sample = torch.zeros(0, *p.shape, device=p.device)
                        dp_opt.step()
                        steps += 1
            finally:
                dp_model._close()
                for p in model.parameters():
                    p.grad = None
                    if hasattr(p, "grad_sample"):
                        del p.grad_sample
        self.ledger.add(fingerprint(x, y), z, q, steps)
        return steps

    def gradient(self, model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        """One noisy batch gradient: per-sample gradients (Opacus) clipped to C, summed, plus N(0, (zC)^2),
        divided by the batch size."""
        from opacus import GradSampleModule

        self._check(model)
        q = self.sample_rate if self.sample_rate is not None else 1.0
        z = self.noise_for(q, 1)
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gsm = GradSampleModule(model)
            try:
                model.zero_grad(set_to_none=True)
                F.cross_entropy(gsm(x), y, reduction="sum").backward()
                params = dict(model.named_parameters())
                per = {n: params[n].grad_sample.detach() for n in names}
            finally:
                gsm._close()
                for p in model.parameters():
                    p.grad = None
                    if hasattr(p, "grad_sample"):
                        del p.grad_sample
        unit = fingerprint(x, y)
        hosted = self.canaries is not None and self.canaries.hosts(unit)
        extra = self.canaries.clipped_sum(per, self.clip) if hosted else None
        out = noisy_clipped_mean(per, self.clip, z, generator, extra=extra)
        self.ledger.add(unit, z, q, 1)
        return out

    def privacy(self) -> dict[str, Any]:
        """Epsilon at delta of the client that spent the most, by the chosen and the other accountants."""
        eps, hist = self.ledger.worst(self.delta, self.accountant)
        by = {a: self.ledger.worst(self.delta, a)[0] for a in ACCOUNTANTS if a != "gdp"}
        return {
            "level": "sample",
            "mechanism": "dp-sgd (Opacus)",
            "epsilon": eps if self.ledger else None,
            "delta": self.delta,
            "accountant": self.accountant,
            "epsilon_by_accountant": by if self.ledger else {},
            "target_epsilon": self.target_epsilon,
            "noise_multiplier": hist[-1][0] if hist else self.noise,
            "clip": self.clip,
            "steps": sum(h[2] for h in hist),
            "sample_rate": hist[-1][1] if hist else None,
            "history": hist,
            "protected_units": len(self.ledger.histories),
            "notes": list(self.notes),
        }


def noisy_clipped_mean(
    per_sample: dict[str, Tensor],
    clip: float,
    noise: float,
    generator: torch.Generator,
    extra: dict[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """DP-SGD's gradient: clip each sample's gradient (all parameters together) to ``clip``, sum, add
    N(0, (noise*clip)^2) to every entry, divide by the number of samples. ``extra`` (already clipped
    canary gradients, for an audit) joins the sum before the noise."""
    first = next(iter(per_sample.values()))
    b = first.shape[0]
    sq = sum(g.reshape(b, -1).double().pow(2).sum(1) for g in per_sample.values())
    factor = (clip / (sq.sqrt() + 1e-6)).clamp(max=1.0).to(first.dtype)
    out = {}
    for n, g in per_sample.items():
        s = torch.einsum("b,b...->...", factor, g)
        if extra is not None:
            s = s + extra[n].to(s.dtype)
        eps = torch.randn(s.shape, generator=generator, dtype=s.dtype).to(s.device)
        out[n] = (s + noise * clip * eps) / max(1, b)
    return out


def sample_rate_of(n: int, batch_size: int) -> float:
    """Opacus's Poisson sampling rate for N records and batch B: 1 / ceil(N / B)."""
    return 1.0 / math.ceil(n / max(1, min(batch_size, n)))
