"""The optimisation engine behind ``dlg``, ``idlg``, ``ig`` and ``fedavg``: dummy records (and, where the
labels are not recovered, soft labels) are optimised so that the update they would produce matches the one
observed.

One configuration, :class:`MatchConfig`, covers the presets (``PRESETS``); they differ only in values:

- ``dlg``: squared L2 distance, L-BFGS, soft labels optimised jointly (Zhu et al. 2019);
- ``idlg``: the same with the label read from the last layer (Zhao et al. 2020);
- ``ig``: cosine distance + total variation, Adam with step decay, signed gradients, box constraint, restarts
  (Geiping et al. 2020);
- ``fedavg``: ``ig`` matched against w1 - w0 through a differentiable replay of the client's local SGD.

All targets (updates) and restarts of a run are P = T x R independent problems solved as one vectorised
computation: ``torch.func.vmap`` over the problems of a function that replays the client's gradient with
``torch.func.grad``, and optimisers with per-problem state (:class:`BatchedLBFGS`; Adam is per-element). The
``dlg`` / ``idlg`` presets try a target's restarts in turn (``alive_below``): the batch holds one start per
target, and a start that is still near its update's squared norm after ``select_at`` is replaced by the next.
Where the network is a chain of convolutions, linear layers and elementwise activations (DLG's LeNet, the MLPs)
and the distance l2, the objectives and their gradients are written out instead (``chain.py``; no autograd, about
twice as fast); elsewhere a run of few problems at a time (a target alone, a retry) evaluates them in one ordinary
autograd graph (``stacked.py``). Either only after a check that it gives the same as vmap.

    >>> import fedleak
    >>> data = fedleak.data.load("digits")
    >>> model = fedleak.models.build("lenet", data.spec, seed=0)
    >>> u = fedleak.fl.client_update(model, data.subset([0]))
    >>> rec = GradientMatching("idlg", MatchConfig(iterations=20)).run([u])[0]
    >>> rec.labels.tolist() == data.labels[[0]].tolist()
    True
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor
from torch.func import functional_call, vmap

from fedleak.attacks.inversion.bn_prior import BN_PRIOR_MODES, BNPrior, choose_prior, prior_targets, prior_value
from fedleak.attacks.inversion.chain import ChainMatch
from fedleak.attacks.inversion.families import family_of, fedavg_engine, ig_defaults
from fedleak.attacks.inversion.fedavg_labels import (
    MAX_RECORDS,
    SCHEDULE_RECORDS,
    SCHEDULE_TIE,
    rank_label_rows,
    rank_schedules,
)
from fedleak.attacks.inversion.image_prior import GaussianImagePrior
from fedleak.attacks.inversion.labels import last_layer, recover_labels
from fedleak.attacks.inversion.lbfgs import BatchedLBFGS
from fedleak.attacks.inversion.objectives import DISTANCES, total_variation
from fedleak.attacks.inversion.record import Reconstruction
from fedleak.attacks.inversion.replay import (
    attack_module,
    epoch_count,
    fedavg_delta,
    fedsgd_gradient,
    schedule_batches,
)
from fedleak.attacks.inversion.stacked import STACKED_MAX, agrees, stacked_gradients, stacked_twin
from fedleak.attacks.inversion.starts import StartsInTurn
from fedleak.data.dataset import DataSpec
from fedleak.errors import FedleakInputError
from fedleak.fl.update import ClientUpdate

DTYPES = {"float32": torch.float32, "float64": torch.float64}
STARTS = ("normal", "uniform", "mean")  # where the dummy records start (GradientMatching._start)
MEAN_START_NOISE = 0.1  # start="mean": the pixel noise's standard deviation around the format's mean colour
# FedAvg, hard labels: the restarts share out the label rows whose simulated training misses the last layer's change
# by at most this factor of the best row's miss (fedavg_labels; on DLG's LeNet, CIFAR-10, 2 steps of 2, the true
# row's miss is 2-3x below the next one's); a row clearly worse is not worth a restart
LABEL_CLOSE = 2.0


@dataclass(frozen=True)
class MatchConfig:
    """Everything that distinguishes one gradient-matching attack from another."""

    distance: str = "l2"  # a name in DISTANCES
    optimizer: str = "lbfgs"  # lbfgs (per-problem, DLG's settings) or adam
    iterations: int = 300  # L-BFGS: calls of step (each up to max_iter inner iterations); Adam: steps
    lr: float | None = None  # default: 1.0 for L-BFGS, 0.1 for Adam
    restarts: int = 1
    select_at: float = 0.1  # L-BFGS with R > 1: after this fraction of the iterations keep each target's best
    alive_below: float = 0.0  # L-BFGS, R > 1: try the restarts in turn, keeping the first whose objective at select_at
    # is at most this of |target|^2 (else the lowest tried); 0: all R at once, the lowest at select_at kept
    tv: float = 0.0  # weight of the total-variation prior
    labels: str = "analytic"  # analytic (from the last layer, else joint) or joint (DLG's soft labels)
    signed: bool = False  # Adam on the sign of the gradient
    boxed: bool = False  # clamp dummies to the valid pixel range after each step
    lr_decay: bool = False  # x0.1 at 3/8, 5/8, 7/8 of the iterations
    replay: str = "gradient"  # gradient (FedSGD) or fedavg (S local steps, match w1 - w0)
    dtype: str = "float32"  # the replay's dtype (L-BFGS keeps its iterate in float64, its history in this)
    max_iter: int = 20  # L-BFGS inner iterations per step (PyTorch's default)
    history_size: int = 100  # L-BFGS curvature pairs kept (PyTorch's default)
    tolerance_change: float = 1e-9  # L-BFGS: a step ends when the loss or the step changes less (PyTorch's)
    tolerance_grad: float = 1e-7  # L-BFGS: a problem stops when its gradient is this small (PyTorch's)
    retries: int = 0  # l2: targets whose best objective stays above retry_above * |target|^2 run again, new starts
    retry_above: float = 1e-7
    stall_steps: int = 0  # l2, L-BFGS: a problem below stall_below * |target|^2 stops when its objective fell by
    stall_gain: float = 0.05  # less than this fraction over the last stall_steps steps (0: never stops early)
    stall_below: float = 1e-8
    crawl_steps: int = 0  # l2, L-BFGS: a problem at any level whose objective fell by less than crawl_gain over the
    crawl_gain: float = 0.02  # last crawl_steps steps stops (0: never); stuck points that the rest would not leave
    stop_below: float = 0.0  # l2, L-BFGS: a problem stops once its objective is at most this of |target|^2 (0: never)
    tag_alpha: float = 0.01
    start: str = "normal"  # the dummies' start (STARTS): normal, uniform or mean; see GradientMatching._start
    bn_prior: str = "auto"  # BatchNorm running statistics as a prior (bn_prior.py): auto (where they inform) or off
    bn_weight: float = 0.1  # its weight beside the distance (measured runs in bn_prior.py: 0.1 best of 0 / 0.1 / 1)
    image_prior: GaussianImagePrior | None = None  # a Gaussian of public records (image_prior.py); None: no prior
    prior_weight: float = (
        1e-6  # its energy's weight, times |target|^2 for l2 (idlg B=4 LeNet CIFAR-10, 8 images: 7 of 8
    )
    # above 30 dB, median 36.1; at 1e-5 5 of 8, median 31.6)
    seed: int = 0
    device: str | None = None  # default: where the update's tensors are
    on_progress: Callable[[int, int, str], None] | None = None  # (done, total, label) after each iteration

    def validate(self) -> None:
        DISTANCES.get(self.distance)
        checks = [
            (self.optimizer in ("lbfgs", "adam"), f"optimizer {self.optimizer!r}: choose lbfgs or adam"),
            (self.labels in ("analytic", "joint"), f"labels {self.labels!r}: choose analytic or joint"),
            (self.replay in ("gradient", "fedavg"), f"replay {self.replay!r}: choose gradient or fedavg"),
            (self.dtype in DTYPES, f"dtype {self.dtype!r}: choose float32 or float64"),
            (self.start in STARTS, f"start {self.start!r}: choose {', '.join(STARTS)}"),
            (self.bn_prior in BN_PRIOR_MODES, f"bn_prior {self.bn_prior!r}: choose {' or '.join(BN_PRIOR_MODES)}"),
            (0 <= self.bn_weight < float("inf"), f"bn_weight {self.bn_weight}: a finite weight >= 0"),
            (0 <= self.prior_weight < float("inf"), f"prior_weight {self.prior_weight}: a finite weight >= 0"),
            (self.iterations >= 1, f"--iterations {self.iterations}: must be at least 1"),
            (self.restarts >= 1, f"--restarts {self.restarts}: must be at least 1"),
            (self.history_size >= 1, f"history_size {self.history_size}: must be at least 1"),
            (0 <= self.select_at <= 1, f"select_at {self.select_at}: a fraction of the iterations in [0, 1]"),
            (self.alive_below >= 0, f"alive_below {self.alive_below}: must be >= 0"),
            (self.stall_steps >= 0, f"stall_steps {self.stall_steps}: must be >= 0"),
            (0 <= self.stall_gain < 1, f"stall_gain {self.stall_gain}: a fraction in [0, 1)"),
            (self.stall_below >= 0, f"stall_below {self.stall_below}: must be >= 0"),
            (self.crawl_steps >= 0, f"crawl_steps {self.crawl_steps}: must be >= 0"),
            (0 <= self.crawl_gain < 1, f"crawl_gain {self.crawl_gain}: a fraction in [0, 1)"),
            (self.stop_below >= 0, f"stop_below {self.stop_below}: must be >= 0"),
        ]
        for ok, msg in checks:
            if not ok:
                raise FedleakInputError(msg)


_IG = MatchConfig(
    distance="cosine",
    optimizer="adam",
    iterations=2000,
    tv=1e-4,
    signed=True,
    boxed=True,
    lr_decay=True,
    restarts=1,
    dtype="float32",
)

# DLG's L-BFGS with up to 4 restarts, tried in turn: a random start falls, about one time in sixteen on CIFAR-10
# with DLG's LeNet, into a point whose gradient vanishes or blows up, and never leaves it. After 2% of the
# iterations (6 of 300 steps) such a start sits at 0.33-1.2 of the update's squared norm and every other at
# 1.6e-5..3.6e-2 (160 starts: 4 x the first of each class on the checks' network, the iDLG authors' 10 networks
# and 20 of fedleak's; the 3.6e-2 is the checks' hardest target): a start above 0.1 there is given up for the
# target's next, and after the fourth the target goes on from the lowest it tried. Running all 4 at once and
# keeping the lowest at step 6 (alive_below 0) cost 11-14% more replays on those sets for the same PSNRs (median
# 53.4 / 50.7 against 54.2 / 53.2 dB on the checks' and the authors' networks; bench/inversion_peer.py). PyTorch's
# absolute tolerance of 1e-9 stops a problem whose squared distance is already ~1e-6 while it still improves
# (36 dB where 300 steps reach 60), so the presets use 1e-13.
# A target not converged after the iterations goes on, at most twice more: on the 10 CIFAR-10 targets of the
# checks (300 steps), nine end between 1.5e-10 and 1.0e-9 of the update's squared norm (48.5-57.8 dB) and one at
# 1.6e-5 (19.7 dB; the model is already 75% sure of its class, its gradient 16x weaker than the others'); 1e-7
# sits between. Eight new starts for it ended at 1.5e-5 again, 900 steps from its own start reach 4.1e-8 (36.5 dB).
# A problem below 1e-8 that fell by less than 5% over 10 steps stops. On the first CIFAR-10 image of each class
# (bench/inversion.py's targets; one restart, 300 steps, objective and PSNR logged per step) every converged
# target's objective flattens between steps 130 and 180 at 1.5e-10..9e-10 (float32's floor for this replay); the
# rule stops them there (mean step 166) with the median of step 300 (54.0 dB). The preset so (4 restarts chosen
# after 6 steps, this rule) replays 3,796 times per target in one batch of those 10 (median 54.0 dB, worst 35.7;
# 21.1 CPU-s per target on a loaded machine) where one restart for 300 steps replayed 5,439 times. Stricter (5
# steps, or 30%) stops at steps 145-148 and loses 1.6 dB of median (43 dB for the slowest); below 1e-7 rather than
# 1e-8 the slowest target stopped at 34.2 dB while it still gained a few % per 10 steps. Dead starts are told
# apart after 6 steps (objective ~1 of the update's squared norm against 1e-4 for the others), not 30.
# ``stop_below`` (stop at a fraction of the squared norm, stalled or not) stays off: at 1e-9 it saves 21% of the
# replays of converged targets (first of each class, logged per step: 2,402 against 3,052 per target) but lowers
# their median from 54.8 to 50.2 dB, and beside the iDLG authors' code at 10 targets the batch still cost 0.85 of
# the peer's time per target (one hard target, 25 dB, goes on alone with its retries; not timed apart). 30 pairs
# of history instead of 100 cost 30% more replays; choosing the restart after 3 steps sent a slow target into a retry.
# A problem at any level whose best objective fell by less than 2% over 20 steps stops (the crawl rule). On the
# iDLG authors' networks (bench/inversion_peer.py) one target plateaus at 1.6e-6 by step 70 and gains 0.6% per 10
# steps from there (24.9 dB at step 300; two retries of 300 steps each from there added 0.1%), another sits at
# 1.3e-8 from step 140, just above stall_below; the checks' slowest target sits at 3.2e-8 from step 200. Measured
# by the best objective so far, since without a line search a step can overshoot for a moment (steps 4x and 300x
# above the last were seen on the checks' slowest target, which then went on falling).
_DLG = MatchConfig(
    distance="l2",
    optimizer="lbfgs",
    restarts=4,
    select_at=0.02,
    alive_below=0.1,
    stall_steps=10,
    stall_gain=0.05,
    crawl_steps=20,
    tolerance_change=1e-13,
    tolerance_grad=1e-11,
    retries=2,
    bn_prior="off",  # FedSGD has only the dataset-level BN prior, not 0 at the truth: it would hold l2 off its optimum
)

PRESETS: dict[str, MatchConfig] = {
    "dlg": replace(_DLG, labels="joint"),
    "idlg": replace(_DLG, labels="analytic"),
    "ig": _IG,
    "fedavg": replace(_IG, replay="fedavg"),  # Inverting Gradients matching a replay of S local steps
}


# what ``fedavg`` takes from DLG's engine on the families that need it (families.fedavg_engine); the replay, the
# labels' source and the BatchNorm prior stay the fedavg preset's
L2_ENGINE_FIELDS = (
    "distance", "optimizer", "iterations", "lr", "restarts", "select_at", "tv", "signed", "boxed", "lr_decay",
    "tolerance_change", "tolerance_grad", "retries", "stall_steps", "stall_gain", "stall_below", "crawl_steps",
    "crawl_gain", "start",
)  # fmt: skip
# The image prior's weight there is idlg's, 1e-6, measured on the FedAvg batch too (DLG's LeNet, CIFAR-10, 2
# updates of 4 records in 2 steps of 2 at lr 0.01, seed 0; labels right in both): images above 30 dB / median at 1e-4,
# 3e-5, 1e-5, 3e-6, 1e-6, 3e-7: 4 / 29.9, 7 / 31.9, 7 / 33.8, 7 / 36.5, 7 / 38.9, 7 / 40.6 dB (the 8th fails at 16-17
# dB in each); one step of 4 records (4,692 directions unseen rather than 168) at 1e-5, 3e-6, 1e-6: 5, 6, 7 of 8.
L2_ENGINE = {name: getattr(_DLG, name) for name in L2_ENGINE_FIELDS} | {"lr": 1.0}


def make_config(preset: str, **options: object) -> MatchConfig:
    """A preset with some values changed; unknown options fail with the list of valid ones."""
    names = {f.name for f in fields(MatchConfig)}
    bad = sorted(set(options) - names)
    if bad:
        raise FedleakInputError(f"attack {preset!r} has no option {bad[0]!r}; options: {', '.join(sorted(names))}")
    cfg = replace(PRESETS[preset], **{k: v for k, v in options.items() if v is not None})  # type: ignore[arg-type]
    cfg.validate()
    return cfg


def as_gradient(update: ClientUpdate) -> float:
    """The factor that reads the payload as the mean gradient it stands for: -1 / (local_lr x local_steps) for a
    FedAvg delta (w1 - w0 = -lr x the sum of the steps' gradients), 1 for a gradient. The attacks match it so read:
    the l2 distance, L-BFGS's first step and its absolute tolerances then meet a FedAvg update on the scale of a
    FedSGD gradient (measured: one local step of 4 records at lr 0.01 on DLG's LeNet, the very FedSGD gradient
    times -0.01, rebuilt 0 of 8 CIFAR-10 images matched as sent, where idlg rebuilds 5 of 8 from the gradient);
    the cosine distance is unchanged by it."""
    if update.kind != "delta" or not update.local_lr or not update.local_steps:
        return 1.0
    return -1.0 / (float(update.local_lr) * float(update.local_steps))


def squared_norm(update: ClientUpdate) -> float:
    """|payload|^2 read as a gradient (``as_gradient``): the scale of the l2 objective's stopping and retry rules
    (relative to what was sent)."""
    return sum(float(t.double().pow(2).sum()) for t in update.payload.values()) * as_gradient(update) ** 2


@dataclass
class _Problem:
    """The shared setup of one group of updates (same model and batch shape)."""

    module: torch.nn.Module
    names: list[str]
    consts: dict[str, Tensor]
    theta: dict[str, Tensor]  # stacked per target [T, ...] or shared
    shared: bool
    target: list[Tensor]  # per parameter, stacked [T, ...]
    labels: Tensor | None  # [T, N] hard labels, or None (joint soft labels)
    label_method: str
    n: int  # records per update
    clients: int  # K: the payload is a sum over K clients' updates
    bn: BNPrior | None = None  # the BatchNorm prior used (its targets follow the payload's in ``target``)
    bn_why: str = ""


class GradientMatching:
    """The engine: ``run(updates)`` returns one :class:`Reconstruction` per update, all in one batch."""

    def __init__(self, name: str, config: MatchConfig, given: Collection[str] = ()) -> None:
        """``given``: the option names the user set; for ``ig`` and ``fedavg`` every other of the family's
        measured settings (``families.ig_defaults``: tv, lr, start) replaces the preset's for that model, and
        ``fedavg`` on the families of ``families.fedavg_engine`` takes DLG's engine (``L2_ENGINE``) instead."""
        config.validate()
        self.name, self.config, self.given = name, config, frozenset(given)

    def _for_model(self, model: str) -> tuple[MatchConfig, dict]:
        """The configuration for updates of ``model`` and what it took from the family table."""
        if self.name not in ("ig", "fedavg"):
            return self.config, {}
        table = L2_ENGINE if self.name == "fedavg" and fedavg_engine(model) == "l2" else ig_defaults(model)
        chosen = {k: v for k, v in table.items() if k not in self.given}
        return (replace(self.config, **chosen) if chosen else self.config), chosen  # type: ignore[arg-type]

    # setup -------------------------------------------------------------------------------------------------
    def _check(self, updates: Sequence[ClientUpdate]) -> None:
        cfg = self.config
        u0 = updates[0]
        for u in updates:
            if u.data_spec is None:
                raise FedleakInputError(f"attack {self.name!r} needs the data format (data_spec) of the update")
            if (u.model, u.num_samples, u.num_clients, u.kind) != (
                u0.model,
                u0.num_samples,
                u0.num_clients,
                u0.kind,
            ):
                raise FedleakInputError("updates attacked together must share model, num_samples and kind")
        if cfg.replay == "fedavg":
            if u0.kind != "delta":
                raise FedleakInputError(f"attack {self.name!r} inverts FedAvg updates (w1 - w0); this is a gradient")
            u0.require("num_samples", "local_steps", "local_lr", "batch_size", attack=self.name)
        else:
            if u0.kind != "gradient":
                raise FedleakInputError(
                    f"attack {self.name!r} inverts a FedSGD gradient; for a FedAvg update use --attack fedavg"
                )
            if u0.num_samples is None and u0.batch_size is None:
                u0.require("num_samples", attack=self.name)

    def _setup(self, updates: Sequence[ClientUpdate], dev: torch.device, dtype: torch.dtype) -> _Problem:
        from fedleak.models import build

        cfg = self.config
        u0 = updates[0]
        spec = u0.data_spec
        assert spec is not None
        model = build(u0.model, spec, seed=0, device=dev)
        module = attack_module(model, u0.train_mode).to(dtype)
        names = [n for n in u0.payload if n in dict(module.named_parameters())]
        allowed = set(module.state_dict())
        consts = {
            k: v.to(dev, dtype if v.is_floating_point() else v.dtype)
            for k, v in u0.global_state.items()
            if k in allowed and k not in names
        }
        thetas = [{n: u.global_state[n].to(dev, dtype) for n in names} for u in updates]
        shared = all(torch.equal(t[n], thetas[0][n]) for t in thetas[1:] for n in names)
        theta = thetas[0] if shared else {n: torch.stack([t[n] for t in thetas]) for n in names}
        target = [torch.stack([u.payload[n].to(dev, dtype) * as_gradient(u) for u in updates]) for n in names]
        n = int(u0.num_samples if u0.num_samples is not None else u0.batch_size)  # type: ignore[arg-type]
        labels, method = None, "joint"
        if all(u.labels is not None for u in updates):
            labels, method = torch.stack([u.labels.to(dev).long() for u in updates]), "granted"  # type: ignore[union-attr]
        elif cfg.labels == "analytic":
            w, b = last_layer(u0.payload, spec.num_classes)
            if w is not None:
                sign = 1.0
                if u0.kind == "delta":  # w1 - w0 = -lr * (sum of the local gradients)
                    sign = -1.0 / (float(u0.local_lr or 1.0) * float(u0.local_steps or 1))
                probs = self._mean_probs(module, consts, thetas, spec, u0.num_clients, dtype, dev)
                pairs = zip(updates, probs, strict=True)
                k = u0.num_clients
                labels = torch.stack([recover_labels(u.payload, w, b, n, sign, p, k) for u, p in pairs])
                labels = labels.to(dev)
                method = "analytic"
        bn, bn_why = choose_prior(updates, module, cfg.bn_prior)
        if bn is not None:
            per_update = [prior_targets(bn, u) for u in updates]
            target += [torch.stack([t[j] for t in per_update]).to(dev, dtype) for j in range(len(per_update[0]))]
        return _Problem(module, names, consts, theta, shared, target, labels, method, n, u0.num_clients, bn, bn_why)

    def _start(
        self, r: int, xshape: tuple, yshape: tuple | None, dtype: torch.dtype, spec: DataSpec | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Restart r's dummy records and, for joint labels, soft labels (N(0, 1)), seeded by (seed, r). The
        records by ``start``: ``normal``, N(0, 1) in model-input space; ``uniform``, pixels U(0, 1) (the valid
        box), normalised by ``spec``; ``mean``, the format's mean colour ``spec.mean`` + N(0, 0.1^2) pixel noise
        (unclipped), normalised: N(0, (0.1 / std)^2) in model-input space."""
        start = self.config.start
        gen = torch.Generator().manual_seed(self.config.seed * 1_000_003 + r)
        if start == "normal":
            x = torch.randn(xshape, generator=gen, dtype=dtype)
        elif spec is None:
            raise FedleakInputError(f"start {start!r} needs the data format (data_spec) of the update")
        elif start == "uniform":
            x = spec.normalize(torch.rand(xshape, generator=gen, dtype=dtype))
        else:
            mean = spec.denormalize(torch.zeros(xshape, dtype=dtype))  # the format's mean colour, in pixels
            x = spec.normalize(mean + MEAN_START_NOISE * torch.randn(xshape, generator=gen, dtype=dtype))
        return x, None if yshape is None else torch.randn(yshape, generator=gen, dtype=dtype)

    def _mean_probs(self, module, consts, thetas, spec, clients, dtype, dev) -> list[Tensor]:  # noqa: ANN001
        """The model's mean softmax output on the attacker's own inputs (64 seeded N(0, 1) records in
        model-input space, in the client's mode), per target, for counting labels."""
        gen = torch.Generator().manual_seed(self.config.seed + 12345)
        x = torch.randn((64, *spec.shape), generator=gen, dtype=dtype).to(dev)
        with torch.no_grad():
            return [torch.softmax(functional_call(module, (th, consts), (x,)), -1).mean(0) for th in thetas]

    # the objective -----------------------------------------------------------------------------------------
    def _image_prior(self, prob: _Problem) -> GaussianImagePrior | None:
        """The configured image prior in the replay's dtype and device (converted once, not per evaluation)."""
        ip = self.config.image_prior
        if ip is None:
            return None
        ref = prob.target[0]
        return GaussianImagePrior(ip.mean.to(ref), ip.whiten.to(ref), ip.num_images)

    def _objective_fn(self, prob: _Problem, update: ClientUpdate):  # noqa: ANN202
        cfg = self.config
        dist = DISTANCES.get(cfg.distance)
        dist_kw = {"alpha": cfg.tag_alpha} if cfg.distance == "tag" else {}
        k = prob.clients
        image = self._image_prior(prob)

        read = as_gradient(update)

        def replay(
            theta: dict[str, Tensor], x: Tensor, y: Tensor, bn: list | None = None, sched: Tensor | None = None
        ) -> dict[str, Tensor]:
            if cfg.replay == "fedavg":
                steps, b = int(update.local_steps), int(update.batch_size)  # type: ignore[arg-type]
                order = None if sched is None else schedule_batches(sched, x.shape[0], b, steps)
                delta = fedavg_delta(
                    prob.module,
                    theta,
                    prob.consts,
                    x,
                    y,
                    local_steps=int(update.local_steps),  # type: ignore[arg-type]
                    local_lr=float(update.local_lr),
                    batch_size=int(update.batch_size),
                    bn_stats=bn,
                    order=order,
                )  # type: ignore[arg-type]
                return {k: v * read for k, v in delta.items()}  # read as the mean gradient, as the target is
            return fedsgd_gradient(prob.module, theta, prob.consts, x, y, bn_stats=bn)

        def objective(
            x: Tensor, y: Tensor, theta: dict[str, Tensor], target: list[Tensor], sched: Tensor | None = None
        ) -> Tensor:
            bn = [] if prob.bn is not None else None  # each BatchNorm call's batch statistics (k == 1 here)
            if k == 1:
                g = replay(theta, x, y, bn, sched)
            else:  # secure aggregation: the sum of K clients' updates, each on its share of the records
                parts = [replay(theta, xs, ys) for xs, ys in zip(x.chunk(k), y.chunk(k), strict=True)]
                g = {nm: sum(p[nm] for p in parts) for nm in prob.names}
            m = len(prob.names)
            loss = dist([g[nm] for nm in prob.names], target[:m], **dist_kw)
            if cfg.tv:
                loss = loss + cfg.tv * total_variation(x)
            if bn is not None:
                loss = loss + cfg.bn_weight * prior_value(prob.bn, bn, target[m:])  # type: ignore[arg-type]
            if image is not None:  # the Gaussian energy, relative to what was sent for l2 (scale-free as l2/|t|^2)
                scale = sum(t.pow(2).sum() for t in target[:m]) if cfg.distance == "l2" else 1.0
                loss = loss + cfg.prior_weight * scale * image.energy(x).mean()
            return loss

        return objective

    def _stacked_fn(self, prob: _Problem, spec: DataSpec):  # noqa: ANN202
        """The P problems' objectives in one ordinary graph (stacked.py), for FedSGD gradients of networks of
        convolutions, linear layers and per-record operations, with no prior but TV; None elsewhere."""
        cfg = self.config
        if cfg.replay != "gradient" or prob.clients != 1 or prob.bn is not None or cfg.image_prior is not None:
            return None
        twin = stacked_twin(prob.module, tuple(spec.shape))
        if twin is None:
            return None
        dist = DISTANCES.get(cfg.distance)
        dist_kw = {"alpha": cfg.tag_alpha} if cfg.distance == "tag" else {}
        m = len(prob.names)

        def objectives(x: Tensor, y: Tensor, th: dict[str, Tensor], tg: list[Tensor], sc: Tensor | None) -> Tensor:
            g = stacked_gradients(twin, th, prob.consts, x, y, prob.shared)
            loss = dist([g[nm] for nm in prob.names], tg[:m], batch_dims=1, **dist_kw)
            if cfg.tv:
                loss = loss + cfg.tv * total_variation(x, batch_dims=1)
            return loss

        return objectives

    def _chain_fn(self, prob: _Problem):  # noqa: ANN202
        """The P problems' objectives and their gradients written out (chain.py), for the l2 distance on FedSGD
        gradients of chain networks, with TV and the image prior beside it (by autograd, in the records alone);
        None elsewhere."""
        cfg = self.config
        if cfg.replay != "gradient" or cfg.distance != "l2" or prob.clients != 1 or prob.bn is not None:
            return None
        chain = ChainMatch.from_module(prob.module)
        if chain is None or sorted(chain.names()) != sorted(prob.names) or not chain.buffers() <= set(prob.consts):
            return None
        image, m = self._image_prior(prob), len(prob.names)

        def objectives(x: Tensor, labels: Tensor, th: dict[str, Tensor], tg: list[Tensor]) -> tuple[Tensor, ...]:
            val, gx, gy = chain(x, labels, th, prob.consts, dict(zip(prob.names, tg, strict=False)), prob.shared)
            if cfg.tv or image is not None:
                with torch.enable_grad():
                    xg = x.detach().requires_grad_(True)
                    extra = cfg.tv * total_variation(xg, batch_dims=1) if cfg.tv else 0
                    if image is not None:  # the Gaussian energy, relative to what was sent (as in _objective_fn)
                        scale = sum(t.pow(2).flatten(1).sum(1) for t in tg[:m])
                        energy = image.energy(xg.reshape(-1, *xg.shape[2:])).view(xg.shape[:2]).mean(1)
                        extra = extra + cfg.prior_weight * scale * energy
                    (g,) = torch.autograd.grad(extra.sum(), [xg])  # type: ignore[union-attr]
                val, gx = val + extra.detach(), gx + g  # type: ignore[union-attr]
            return val, gx, gy

        return objectives

    # the run ---------------------------------------------------------------------------------------
    def run(self, updates: Sequence[ClientUpdate]) -> list[Reconstruction]:
        """Attack every update; the updates are grouped by (model, batch) and each group is one batch."""
        if not updates:
            return []
        groups: dict[tuple, list[int]] = {}
        for i, u in enumerate(updates):
            groups.setdefault((u.model, u.num_samples, u.kind, u.num_clients, u.train_mode), []).append(i)
        out: list[Reconstruction | None] = [None] * len(updates)
        for idx in groups.values():
            cfg, chosen = self._for_model(updates[idx[0]].model)
            engine = self if cfg is self.config else GradientMatching(self.name, cfg, self.given)
            for i, rec in zip(idx, engine._run_group([updates[i] for i in idx]), strict=True):
                if self.name in ("ig", "fedavg"):  # the settings that ran, and where each came from
                    source = {k: "given" if k in self.given else "preset" for k in ("tv", "lr", "start")}
                    source |= {k: f"family {family_of(updates[i].model)}" for k in chosen}
                    lr = cfg.lr or (1.0 if cfg.optimizer == "lbfgs" else 0.1)
                    rec.extras["settings"] = {
                        "tv": cfg.tv,
                        "lr": lr,
                        "start": cfg.start,
                        "from": source,
                        "engine": f"{cfg.distance} distance, {cfg.optimizer}",
                    }
                out[i] = rec
        return out  # type: ignore[return-value]

    def _run_group(
        self,
        updates: Sequence[ClientUpdate],
        attempt: int = 0,
        start: Tensor | None = None,
        start_labels: Tensor | None = None,
        start_schedules: Tensor | None = None,
    ) -> list[Reconstruction]:
        """One batched run of ``updates``; with ``retries`` (hard labels, l2), where most targets converged
        (objective at most ``retry_above`` of their update's squared norm), the few that did not go on from where
        they stopped for another ``iterations``, in a smaller batch, and each keeps the run with the lower
        objective."""
        recs = self._run_once(updates, attempt, start, start_labels, start_schedules)
        cfg = self.config
        if (
            cfg.distance != "l2"
            or attempt >= cfg.retries
            or recs[0].label_method == "joint"
            or cfg.image_prior is not None
        ):
            return recs
        scale = [squared_norm(u) for u in updates]
        stuck = [i for i, r in enumerate(recs) if not float(r.objective.min()) <= cfg.retry_above * scale[i]]
        # only the few the budget did not suffice for, when it did for most (a short budget is the user's choice)
        if stuck and (attempt > 0 or 2 * len(stuck) < len(recs)):
            again = self._run_group(
                [updates[i] for i in stuck],
                attempt + 1,
                torch.stack([recs[i].inputs for i in stuck]),
                torch.stack([recs[i].labels for i in stuck]),
                None
                if recs[0].extras.get("schedule") is None
                else torch.tensor([recs[i].extras["schedule"] for i in stuck]),
            )
            for i, rec in zip(stuck, again, strict=True):
                spent, runs = recs[i].seconds + rec.seconds, rec.extras.get("retried", 0) + 1  # runs after the first
                if float(rec.objective.min()) < float(recs[i].objective.min()):  # the same restart, gone further
                    objective = recs[i].objective.clone()
                    objective[recs[i].best_restart] = rec.objective.min()
                    rec.objective, rec.best_restart = objective, recs[i].best_restart
                    recs[i] = rec
                recs[i].seconds = spent
                recs[i].extras["retried"] = runs
        return recs

    def _run_once(
        self,
        updates: Sequence[ClientUpdate],
        attempt: int = 0,
        start: Tensor | None = None,
        start_labels: Tensor | None = None,
        start_schedules: Tensor | None = None,
    ) -> list[Reconstruction]:
        """``start``: each update's dummy records to go on from (one restart each), instead of seeded draws;
        ``start_labels``: their labels in that order (a FedAvg run's chosen label arrangement);
        ``start_schedules``: its later epochs' record orders (T, E, N)."""
        cfg = self.config
        self._check(updates)
        t0 = time.perf_counter()
        dev = torch.device(cfg.device) if cfg.device else next(iter(updates[0].payload.values())).device
        dtype = DTYPES[cfg.dtype]
        prob = self._setup(updates, dev, dtype)
        spec = updates[0].data_spec
        assert spec is not None
        T, R, N = len(updates), (cfg.restarts if start is None else 1), prob.n
        orders = None  # FedAvg, hard labels: each target's label rows over the local steps, best first (A_t, N)
        scheds = None  # and with several epochs, each row's record order in every epoch (A_t, E, N)
        notes: dict[int, str] = {}  # per target: what the run could not settle (results.json's notes)

        def note(t: int, text: str) -> None:
            notes[t] = f"{notes[t]}; {text}" if t in notes else text

        epochs = epoch_count(N, int(updates[0].batch_size or N), int(updates[0].local_steps or 1))
        if prob.labels is not None and cfg.replay == "fedavg" and prob.clients == 1 and N <= MAX_RECORDS:
            if start_labels is not None:
                orders = [start_labels[t].view(1, -1).to(dev) for t in range(T)]
                if start_schedules is not None:
                    scheds = [start_schedules[t][None].to(dev) for t in range(T)]
            else:  # the restarts take the rows whose simulated training best matches the last layer's change
                orders, scheds = [], [] if 1 < epochs and N <= SCHEDULE_RECORDS else None
                if epochs > 1 and scheds is None:
                    for t in range(T):
                        note(
                            t,
                            f"the client's reshuffle over {epochs} epochs is not searched ({N} records; the search "
                            f"stops at {SCHEDULE_RECORDS}): every epoch is replayed in the first epoch's grouping",
                        )
                if spec.num_classes == 2 and prob.label_method == "analytic":
                    for t in range(T):  # measured on lfw-faces (LeNet, 8 and 16 records, lr 0.1 and 0.01)
                        note(
                            t,
                            "with 2 classes the last layer's change is one number, which label rows of other "
                            "counts match as well: the simulated labels may be wrong (on lfw-faces the client's "
                            "count ranked first in 2 of 6 updates)",
                        )
                for t in range(T):
                    th = prob.theta if prob.shared else {k: v[t] for k, v in prob.theta.items()}
                    rows, err = rank_label_rows(
                        prob.module,
                        th,
                        prob.consts,
                        updates[t],
                        prob.labels[t],
                        R,
                        granted=prob.label_method == "granted",
                        seed=cfg.seed,
                    )
                    rows = rows[err <= LABEL_CLOSE * err[0]]  # the rows as good as the best
                    if scheds is not None:  # and, for each, the later epochs' groupings that best match
                        rows, sch, err = rank_schedules(
                            prob.module, th, prob.consts, updates[t], rows, R, seed=cfg.seed
                        )
                        tied = int((err <= SCHEDULE_TIE * err[0]).sum())
                        if tied > 1:  # the simulation cannot tell them apart: the replay may take the wrong one
                            note(
                                t,
                                f"the client's reshuffle over {epochs} epochs is not identified: at least {tied} "
                                "groupings of the later epochs match the last layer's change equally (within "
                                f"{SCHEDULE_TIE:g}x); the restarts replay {min(tied, R)} of them, and a wrong one "
                                "keeps the reconstruction off the client's images",
                            )
                        scheds.append(sch[err <= LABEL_CLOSE * err[0]])
                        rows = rows[err <= LABEL_CLOSE * err[0]]
                    orders.append(rows)
        P = T * R
        shape = tuple(spec.shape)
        C = spec.num_classes
        # restart r starts every target from the same draw (seeded by seed and r), so that a target attacked
        # alone or among others is the same problem from the same start
        joint = prob.labels is None
        starts = [self._start(r, (N, *shape), (N, C) if joint else None, dtype, spec) for r in range(R)]
        x0 = torch.stack([starts[r][0] for r in range(R)] * T).to(dev) if start is None else start.to(dev, dtype)
        y0 = torch.stack([starts[r][1] for r in range(R)] * T).to(dev) if joint else None
        hard = None if joint else prob.labels.repeat_interleave(R, 0)  # type: ignore[union-attr]
        if orders is not None:  # restart r of target t replays arrangement r mod A_t
            hard = torch.stack([orders[t][r % len(orders[t])] for t in range(T) for r in range(R)])
        sched = None
        if scheds is not None:
            sched = torch.stack([scheds[t][r % len(scheds[t])] for t in range(T) for r in range(R)])
        expand = torch.arange(T, device=dev).repeat_interleave(R)
        target = [t[expand] for t in prob.target]
        theta = prob.theta if prob.shared else {k: v[expand] for k, v in prob.theta.items()}
        theta_dim = None if prob.shared else 0
        objective = self._objective_fn(prob, updates[0])
        # per-problem objectives in one vmap (the inner, replayed gradient by torch.func.grad); their
        # gradients with respect to the dummies by one ordinary backward pass of the sum (the problems are
        # independent, so each problem's dummies get exactly their own objective's gradient)
        batched = vmap(objective, in_dims=(0, 0, theta_dim, 0, None if sched is None else 0))

        def values(x: Tensor, y: Tensor, th: dict[str, Tensor], tg: list[Tensor], sc: Tensor | None) -> Tensor:
            if len(x) > 1:
                return batched(x, y, th, tg, sc)
            # one problem (a target attacked alone, or the last one working): the same objective without vmap,
            # whose replay then runs on plain autograd (replay._autograd_grad)
            one = th if prob.shared else {k: v[0] for k, v in th.items()}
            return objective(x[0], y[0], one, [t[0] for t in tg], None if sc is None else sc[0])[None]

        nx = N * int(torch.tensor(shape).prod())
        stacked = self._stacked_fn(prob, spec)  # the same objectives without vmap, where the network allows
        chain = self._chain_fn(prob)  # and written out, where the network is a chain
        engine = ["vmap"]  # decided below: another engine only where it agrees with vmap

        def evaluate(x: Tensor, y: Tensor | None, rows: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
            """(objective, d/dx, d/dy or None) for all problems, or for the problems ``rows``, in one
            vectorised call."""
            pick = (lambda t: t) if rows is None else (lambda t: t.index_select(0, rows))
            th = theta if prob.shared else {k: pick(v) for k, v in theta.items()}
            tg = target if rows is None else [t.index_select(0, rows) for t in target]
            sc = sched if rows is None or sched is None else sched.index_select(0, rows)
            hd = None if joint else pick(hard)  # type: ignore[arg-type]

            def with_grads(fn) -> tuple[Tensor, Tensor, Tensor | None]:  # noqa: ANN001
                with torch.enable_grad():
                    xg = x.detach().requires_grad_(True)
                    if joint:
                        yg = y.detach().requires_grad_(True)  # type: ignore[union-attr]
                        val = fn(xg, yg, th, tg, sc)
                        gx, gy = torch.autograd.grad(val.sum(), [xg, yg])
                        return val.detach(), gx, gy
                    val = fn(xg, hd, th, tg, sc)
                    (gx,) = torch.autograd.grad(val.sum(), [xg])
                    return val.detach(), gx, None

            if engine[0] == "chain":
                return chain(x, y if joint else hd, th, tg)
            return with_grads(stacked if engine[0] == "stacked" else values)

        # restarts that differ only by their start are tried in turn (alive_below); those that replay other label
        # arrangements (FedAvg) all at once, so that the lowest objective picks the arrangement
        lazy = orders is None and cfg.optimizer == "lbfgs" and cfg.alive_below > 0 and R > 1
        # the written-out chain where the network is one, else for a run of few problems at a time (a target
        # alone, a retry) the stacked graph; each only if it gives the same as vmap at a fixed random point
        others = ["chain"] if chain is not None else []
        if stacked is not None and (T if lazy else P) <= STACKED_MAX:
            others.append("stacked")
        if others:
            draw = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0), dtype=x0.dtype).to(dev)
            ours = evaluate(draw, y0)
            for name in others:
                engine[0] = name
                try:
                    if agrees(evaluate(draw, y0), ours):
                        break
                except RuntimeError:  # a layer fed other than the stacked forms expect (e.g. Linear on 3-D input)
                    pass
                engine[0] = "vmap"

        lo = spec.normalize(torch.zeros(1, *shape, dtype=dtype)).to(dev)
        hi = spec.normalize(torch.ones(1, *shape, dtype=dtype)).to(dev)
        if cfg.optimizer == "lbfgs":
            scale = torch.tensor([squared_norm(u) for u in updates], dtype=torch.float64).repeat_interleave(R)
            x, y, tried = self._lbfgs(evaluate, x0, y0, T, R, nx, scale, lazy)
        else:
            x, y = self._adam(evaluate, x0, y0, lo, hi)
            tried = torch.full((T,), R)
        with torch.no_grad():
            final, _, _ = evaluate(x, y)
        final = torch.nan_to_num(final.detach(), nan=float("inf")).view(T, R)
        best = final.argmin(1)
        seconds = (time.perf_counter() - t0) / T
        recs = []
        for t in range(T):
            p = t * R + int(best[t])
            xi = x[p].detach().float()
            labels = y[p].argmax(-1).cpu() if joint else hard[p].cpu()  # type: ignore[index]
            recs.append(
                Reconstruction(
                    attack=self.name,
                    inputs=xi.cpu(),
                    pixels=spec.denormalize(xi).clamp(0, 1).cpu(),
                    labels=labels,
                    objective=final[t].float().cpu(),
                    best_restart=int(best[t]),
                    seconds=seconds,
                    label_method="simulated"
                    if orders is not None and prob.label_method == "analytic"
                    else prob.label_method,
                    extras={
                        "restarts": R,
                        "starts_tried": int(tried[t]),  # restarts tried in turn (alive_below): those run
                        "label_rows": None if orders is None else len(orders[t]),  # FedAvg: candidate rows tried
                        # several epochs: each epoch's record order the chosen restart replayed (dummy indices)
                        "schedule": None if sched is None else sched[p].tolist(),
                        "note": notes.get(t),
                        "problems_batched": P,
                        # how the objectives were evaluated: written out (chain), in one ordinary graph (stacked,
                        # a run of few problems) or under vmap
                        "engine": engine[0],
                        "bn_prior": None if prob.bn is None else prob.bn.source,  # "update" / "global" / None
                        "bn_prior_why": prob.bn_why,
                        "image_prior": None if cfg.image_prior is None else cfg.image_prior.to_dict(),
                        "prior_weight": None if cfg.image_prior is None else cfg.prior_weight,
                    },
                )
            )
        return recs

    def _lbfgs(
        self, evaluate, x0: Tensor, y0: Tensor | None, T: int, R: int, nx: int, scale: Tensor, lazy: bool = False
    ):  # noqa: ANN001, ANN202
        """``scale``: each problem's |target|^2 (P,), for the stopping rules relative to the update. ``lazy``:
        a target's R > 1 restarts are tried in turn (``alive_below`` > 0; starts.py) rather than all at once.
        Returns x, y (every problem's last iterate) and the starts tried per target (T,)."""
        cfg = self.config
        P = T * R
        xshape = x0.shape
        z0 = x0.reshape(P, -1) if y0 is None else torch.cat([x0.reshape(P, -1), y0.reshape(P, -1)], 1)
        # the iterate, gradients and small matrices are kept in float64 whatever the model's dtype (float32
        # replays are fast, and the bookkeeping does not lose the last digits); the large curvature history is
        # kept in the replay's dtype, as PyTorch keeps it
        dtype = x0.dtype
        select = max(1, round(cfg.select_at * cfg.iterations)) if R > 1 else -1
        starts = StartsInTurn.new(T, R, lazy)  # the problem each of the optimiser's rows works on

        def closure(z: Tensor, rows: Tensor | None) -> tuple[Tensor, Tensor]:
            p = z.shape[0]
            z = z.to(dtype)
            x = z[:, :nx].reshape(p, *xshape[1:])
            y = None if y0 is None else z[:, nx:].reshape(p, *y0.shape[1:])
            if lazy:
                rows = (starts.prob_of if rows is None else starts.prob_of.index_select(0, rows.cpu())).to(z.device)
            val, gx, gy = evaluate(x, y, rows)
            g = gx.reshape(p, -1) if gy is None else torch.cat([gx.reshape(p, -1), gy.reshape(p, -1)], 1)
            return val.double(), g.double()

        opt = BatchedLBFGS(
            z0.index_select(0, starts.prob_of.to(z0.device)).double(),
            lr=cfg.lr or 1.0,
            max_iter=cfg.max_iter,
            history_size=cfg.history_size,
            tolerance_grad=cfg.tolerance_grad,
            tolerance_change=cfg.tolerance_change,
            history_dtype=dtype,  # float32 replays: the history in float32, as PyTorch keeps it
        )
        out = z0.clone()  # every problem's last iterate (a start given up stays where it was checked)
        scale_of = scale.index_select(0, starts.prob_of)  # per row: its target's, whichever start it works on
        n = len(starts.prob_of)
        seen: list[Tensor] = []  # each row's objective at the start of each step
        lowest: list[Tensor] = []  # each row's lowest objective up to each step, within its current start
        steps = cfg.iterations + (select * (R - 1) if lazy else 0)  # in turn: each start kept gets the budget
        for it in range(steps):
            seen.append(opt.step(closure).cpu())
            starts.age += 1
            starts.since += 1
            # NaN is not a low; a row started afresh forgets its last start's
            low = seen[-1] if not lowest else torch.where(starts.fresh, seen[-1], torch.fmin(lowest[-1], seen[-1]))
            lowest.append(low)
            starts.fresh.zero_()
            if cfg.on_progress is not None:
                cfg.on_progress(min(it + 1, cfg.iterations), cfg.iterations, "L-BFGS iterations")
            done = starts.age >= cfg.iterations if lazy else torch.zeros(n, dtype=torch.bool)
            rules = cfg.stop_below or cfg.stall_steps or cfg.crawl_steps
            if cfg.distance == "l2" and rules and cfg.image_prior is None:
                # a problem matched to stop_below of its update's squared norm, or already close (below
                # stall_below) and no longer improving, stops for good: the rest of the budget would buy it
                # nothing it needs (see the preset's note); over a kept start's own steps only
                now = seen[-1]
                rule = now <= cfg.stop_below * scale_of
                if cfg.stall_steps and len(seen) > cfg.stall_steps:
                    then = seen[-1 - cfg.stall_steps]
                    stalled = (now <= cfg.stall_below * scale_of) & (now > (1 - cfg.stall_gain) * then)
                    rule |= stalled & (starts.since > cfg.stall_steps)
                if cfg.crawl_steps and len(seen) > cfg.crawl_steps:  # whatever its level: a stuck point
                    # by the best objective so far: without a line search a step can overshoot for a moment
                    crawled = lowest[-1] > (1 - cfg.crawl_gain) * lowest[-1 - cfg.crawl_steps]
                    rule |= crawled & (starts.since > cfg.crawl_steps)
                done |= rule & starts.settled
            opt.freeze(done)
            if opt.work is not None and len(opt.work) == 0:
                if cfg.on_progress is not None:
                    cfg.on_progress(cfg.iterations, cfg.iterations, "L-BFGS iterations")
                break
            if not lazy and it + 1 == select:  # each target keeps its restart with the lowest objective here
                loss = torch.nan_to_num(closure(opt.z, None)[0], nan=float("inf")).view(T, R)
                keep = torch.nn.functional.one_hot(loss.argmin(1), R).bool().flatten()
                opt.freeze(~keep)
            if lazy:
                due = (~starts.settled & (starts.age == select)).nonzero().flatten()
                if len(due):
                    starts.check(opt, closure, due, z0, out, cfg.alive_below * scale_of, select)
        z = out.index_copy(0, starts.prob_of.to(out.device), opt.z.to(out)).to(dtype)
        x = z[:, :nx].reshape(xshape)
        return x, None if y0 is None else z[:, nx:].reshape(y0.shape), starts.tried

    def _adam(self, evaluate, x0: Tensor, y0: Tensor | None, lo: Tensor, hi: Tensor):  # noqa: ANN001, ANN202
        cfg = self.config
        x = x0.clone().requires_grad_(True)
        y = None if y0 is None else y0.clone().requires_grad_(True)
        opt = torch.optim.Adam([x] if y is None else [x, y], lr=cfg.lr or 0.1)
        n = cfg.iterations
        milestones = [int(n * f) for f in (3 / 8, 5 / 8, 7 / 8)] if cfg.lr_decay else []
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)
        # the best iterate by the attack's own objective, per problem (Adam's last iterate is often not the best:
        # the signed steps oscillate until the learning rate decays); val is the objective at the current x
        best_val = torch.full((x.shape[0],), float("inf"), device=x.device, dtype=torch.float64)
        best_x = x.detach().clone()
        best_y = None if y is None else y.detach().clone()

        def keep_best(val: Tensor) -> None:
            better = torch.nan_to_num(val.double(), nan=float("inf")) < best_val
            best_val[better] = val.double()[better]
            best_x[better] = x.detach()[better]
            if best_y is not None:
                best_y[better] = y.detach()[better]  # type: ignore[union-attr]

        for _ in range(n):
            val, gx, gy = evaluate(x.detach(), None if y is None else y.detach())
            keep_best(val)
            x.grad = gx.sign() if cfg.signed else gx
            if y is not None:
                y.grad = gy.sign() if cfg.signed else gy
            opt.step()
            sched.step()
            if cfg.on_progress is not None:
                cfg.on_progress(sched.last_epoch, n, "Adam steps")
            if cfg.boxed:
                with torch.no_grad():
                    x.copy_(torch.maximum(torch.minimum(x, hi), lo))
        with torch.no_grad():
            keep_best(evaluate(x.detach(), None if y is None else y.detach())[0])
        return best_x, best_y


__all__ = ["PRESETS", "GradientMatching", "MatchConfig", "make_config"]
