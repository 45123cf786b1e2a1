"""The DP audit case: plant canaries in one federated training run, score them from what the server sees,
and set a valid empirical lower bound and the one-shot estimate beside the accountant's epsilon.

Kinds of canaries (``DPAuditOptions.canaries``):

- ``gradient`` (sample-level ``dp-sgd``; Nasr et al. 2023's white-box server): FedSGD, every client sends one
  DP-SGD step per round on all its records (sampling rate 1); client 0 hosts m Dirac gradient canaries
  (:class:`fedleak.defenses.canaries.GradientCanaries`). The server sees every client's noisy step and
  scores canary i by the sum over rounds of the host's noisy clipped-gradient sum in coordinate i, minus the
  host's expected share of the other clients' sums there (a control for the real gradient), over clip.
- ``record`` (sample-level ``dp-sgd``, black-box): the same federation; client 0 also trains on m
  mislabelled test records; each is scored by minus the final model's loss on its wrong label.
- ``client`` (client-level ``client-dp``; Andrew et al. 2024): FedAvg with all clients every round; m
  canary clients, each sending a fixed random unit direction times clip; scored by the cosine between the
  final model delta and the direction. With ``flower="server"`` or ``"client"`` the same federation runs on
  Flower's simulation engine under Flower's own DP wrapper (``DifferentialPrivacyServerSideFixedClipping`` or
  ``...ClientSideFixedClipping`` with ``fixedclipping_mod``), with the noise multiplier and clipping norm the
  ``client-dp`` spec gives, and the canary clients join the replies the wrapper aggregates
  (:mod:`fedleak.flower.dp_audit`); the accountant is then Flower's own.

Every canary is included by a seeded coin the scorer never reads. The lower bound is
:func:`fedleak.metrics.dp_audit.canary_lower_bound` (valid at ``confidence`` for the epsilon of one canary,
a record or a client); the estimate is :func:`fedleak.metrics.dp_audit.one_shot_estimate` (labelled an
estimate; given for the white-box ``gradient`` and ``client`` scores, null for black-box ``record``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import fedleak
from fedleak.data.dataset import Dataset
from fedleak.defenses import ClientDPAggregator, DPSGDTrainer
from fedleak.defenses import plan as defense_plan
from fedleak.defenses.accounting import calibrate_noise
from fedleak.defenses.canaries import CanaryClientAggregator, GradientCanaries, cosine_scores, draw_inclusion, flatten
from fedleak.defenses.dpsgd import fingerprint
from fedleak.device import resolve_device
from fedleak.errors import FedleakInputError
from fedleak.fl import FedConfig, Federation
from fedleak.metrics.dp_audit import canary_lower_bound, one_shot_estimate
from fedleak.registry import Registry
from fedleak.runio import atomic_write_json

DEFAULT_CANARIES = {"gradient": 5000, "record": 200, "client": 1000}


@dataclass(frozen=True)
class DPAuditOptions:
    """What to audit. ``mechanism``: Python only, a DP trainer or aggregator used in place of the one the
    defense spec builds (the tests plug deliberately broken implementations here)."""

    dataset: str = "digits"
    model: str = "mlp"
    defense: str = "dp-sgd:epsilon=8,delta=1e-5"
    canaries: str = "gradient"
    num_canaries: int | None = None
    clients: int = 10
    rounds: int = 30
    lr: float = 0.1
    magnitude: float = 2.0  # a canary's size before clipping, in units of the clip norm
    confidence: float = 0.95
    seed: int = 0
    device: str = "cpu"
    mechanism: Any = None
    # None: fedleak's own engine; "server" / "client": a Flower simulation under Flower's DP wrapper with
    # server-side / client-side fixed clipping (client canaries only; ``mechanism`` is then a factory
    # ``(strategy, noise_multiplier, clipping_norm, num_sampled_clients) -> strategy``)
    flower: str | None = None


@dataclass
class DPAuditResult:
    dataset: str
    model: str
    defense: str
    canary_kind: str
    seed: int
    epsilon: float
    delta: float
    epsilon_lower_bound: float
    epsilon_estimate: float | None
    included: list[bool]
    scores: list[float]
    bound: dict[str, Any]
    estimate: dict[str, Any] | None
    accountant: dict[str, Any]
    rounds: int
    clients: int
    test_accuracy: float
    seconds: float
    threat_model: str
    runs: int = 1
    notes: list[str] = field(default_factory=list)
    engine: str = "fedleak"
    mechanism: str | None = None  # on Flower: the DP wrapper that ran (its class name)

    @property
    def counts(self) -> dict[str, int]:
        n_in = int(sum(self.included))
        return {"total": len(self.included), "included": n_in, "held_out": len(self.included) - n_in}

    @property
    def bound_exceeds_epsilon(self) -> bool:
        return self.epsilon_lower_bound > self.epsilon

    @property
    def verdict(self) -> str:
        c = self.bound["confidence"]
        if self.bound_exceeds_epsilon:
            return (
                f"BROKEN: the empirical lower bound {self.epsilon_lower_bound:.2f} ({c:.0%} confidence) exceeds the "
                f"claimed epsilon {self.epsilon:.2f} at delta {self.delta:g}: {self.implementation} does not "
                "deliver its guarantee."
            )
        return (
            f"The empirical lower bound {self.epsilon_lower_bound:.2f} ({c:.0%} confidence, {self.counts['total']} "
            f"canaries, 1 run) stays below the accountant's epsilon {self.epsilon:.2f} at delta {self.delta:g}: "
            "no violation found (an audit can refute a guarantee, never prove it)."
        )

    @property
    def implementation(self) -> str:
        if self.engine == "flower":
            return f"Flower's {self.mechanism} as configured in this run"
        return "this DP implementation"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "dp_audit",
            "dataset": self.dataset,
            "model": self.model,
            "defense": self.defense,
            "canary_kind": self.canary_kind,
            "engine": self.engine,
            "mechanism": self.mechanism,
            "seed": self.seed,
            "threat_model": self.threat_model,
            "privacy": {
                "epsilon": self.epsilon,
                "delta": self.delta,
                "epsilon_lower_bound": self.epsilon_lower_bound,
                "epsilon_estimate": self.epsilon_estimate,
                "canaries": self.counts,
                "runs": self.runs,
                "confidence": self.bound["confidence"],
                "bound_exceeds_epsilon": self.bound_exceeds_epsilon,
                "verdict": self.verdict,
                "lower_bound_detail": self.bound,
                "estimate_detail": self.estimate,
                "accountant": self.accountant,
            },
            "federation": {"clients": self.clients, "rounds": self.rounds, "test_accuracy": self.test_accuracy},
            "scores": {
                name: [s for s, i in zip(self.scores, self.included, strict=True) if i == want]
                for name, want in (("included", True), ("held_out", False))
            },
            "notes": self.notes,
            "seconds_total": self.seconds,
        }


@dataclass
class _Run:
    scores: np.ndarray
    included: np.ndarray
    privacy: dict[str, Any]
    accuracy: float
    threat: str
    white_box: bool
    engine: str = "fedleak"
    mechanism: str | None = None


def _train(fed: Federation, keep_updates: bool = False, each_round: Callable[[Any], None] | None = None) -> float:
    """Run every round of ``fed`` (``each_round`` sees each round's record, as the server does); the final
    test accuracy."""
    acc = float("nan")
    for r in fed.run(keep_updates=keep_updates):
        if each_round is not None:
            each_round(r)
        acc = r.test_accuracy
    return acc


CanaryCase = Callable[[DPAuditOptions, Any, Any, Any, Any], _Run]
CANARY_KINDS: Registry[CanaryCase] = Registry("canary kind")


def _dp_trainer(opts: DPAuditOptions, plan: Any) -> DPSGDTrainer:
    trainer = opts.mechanism if opts.mechanism is not None else plan.trainer
    if not isinstance(trainer, DPSGDTrainer):
        raise FedleakInputError(
            f"--canaries {opts.canaries} audits sample-level DP-SGD: give --defense dp-sgd:epsilon=E,delta=D"
        )
    if trainer.sample_rate is not None:
        raise FedleakInputError("audit-dp: leave dp-sgd's sample_rate out; every client steps on all its records")
    trainer.calls = opts.rounds
    return trainer


def _fedsgd(opts: DPAuditOptions, model: Any, train: Dataset, test: Dataset, trainer: DPSGDTrainer) -> Federation:
    cfg = FedConfig(
        clients=opts.clients,
        rounds=opts.rounds,
        mode="fedsgd",
        batch_size=len(train),
        server_lr=opts.lr,
        seed=opts.seed,
    )
    return Federation(model, train, test, cfg, trainer=trainer)


@CANARY_KINDS.register("gradient", "Dirac gradient canaries in DP-SGD, white-box server (every step)")
def _gradient(opts: DPAuditOptions, data: Any, model: Any, plan: Any, dev: Any) -> _Run:
    train, test = data
    trainer = _dp_trainer(opts, plan)
    fed = _fedsgd(opts, model, train, test, trainer)
    dim = sum(p.numel() for p in model.parameters() if p.requires_grad)
    m = opts.num_canaries or min(DEFAULT_CANARIES["gradient"], dim)
    host = fingerprint(*(t.to(dev) for t in fed.client_data(0).tensors()))  # as the trainer will see it
    trainer.canaries = GradientCanaries.draw(m, dim, opts.seed, host, opts.magnitude * trainer.clip)
    coords = trainer.canaries.coords.to(dev)
    score = torch.zeros(m, dtype=torch.float64, device=dev)

    def observe(r: Any) -> None:
        nonlocal score
        host_u = [u for u in r.updates if u.client == 0]
        others = [u for u in r.updates if u.client != 0]
        if not host_u:
            return
        b0 = float(host_u[0].num_samples)
        h = flatten(host_u[0].payload).double() * b0
        if others:
            tot = sum(float(u.num_samples) for u in others)
            control = sum(flatten(u.payload).double() * float(u.num_samples) for u in others) / tot * b0
            h = h - control
        score += h[coords] / trainer.clip

    try:
        acc = _train(fed, keep_updates=True, each_round=observe)
        hosted = trainer.canaries.steps_seen
    finally:
        trainer.canaries = None
    if hosted != opts.rounds:
        raise RuntimeError(f"gradient canaries joined {hosted} of {opts.rounds} steps of their host: audit invalid")
    threat = "white-box server: every client's noisy DP-SGD step in every round"
    return _Run(score.cpu().numpy(), draw_inclusion(m, opts.seed), trainer.privacy(), acc, threat, white_box=True)


@CANARY_KINDS.register("record", "mislabelled record canaries in DP-SGD, black-box (final model's loss)")
def _record(opts: DPAuditOptions, data: Any, model: Any, plan: Any, dev: Any) -> _Run:
    train, test = data
    trainer = _dp_trainer(opts, plan)
    m = opts.num_canaries or min(DEFAULT_CANARIES["record"], len(test))
    if not 2 <= m <= len(test):
        raise FedleakInputError(f"--num-canaries {m}: record canaries come from the {len(test)} test records")
    inc = draw_inclusion(m, opts.seed)
    g = torch.Generator().manual_seed(opts.seed)
    pick = torch.randperm(len(test), generator=g)[:m]
    k = test.spec.num_classes
    wrong = (test.labels[pick] + torch.randint(1, k, (m,), generator=g)) % k
    canaries = Dataset(test.spec, test.raw[pick], wrong, test.indices[pick])
    fed = _fedsgd(opts, model, train, test, trainer)
    chosen = torch.as_tensor(np.flatnonzero(inc), dtype=torch.long)
    fed.train = Dataset(
        train.spec,
        torch.cat([train.raw, canaries.raw[chosen]]),
        torch.cat([train.labels, wrong[chosen]]),
        torch.cat([train.indices, canaries.indices[chosen]]),
    )
    fed.parts[0] = np.concatenate([np.asarray(fed.parts[0]), len(train) + np.arange(len(chosen))])
    acc = _train(fed)
    x, y = canaries.tensors()
    with torch.no_grad():
        fed.model.eval()
        loss = F.cross_entropy(fed.model(x.to(dev)), y.to(dev), reduction="none")
    threat = "black-box: the final model's loss on each canary record"
    return _Run(-loss.double().cpu().numpy(), inc, trainer.privacy(), acc, threat, white_box=False)


@CANARY_KINDS.register("client", "canary clients in client-level DP-FedAvg (Andrew et al.), final model delta")
def _client(opts: DPAuditOptions, data: Any, model: Any, plan: Any, dev: Any) -> _Run:
    train, test = data
    agg = opts.mechanism if opts.mechanism is not None and not opts.flower else plan.aggregator
    if not isinstance(agg, ClientDPAggregator):
        raise FedleakInputError("--canaries client audits client-level DP: give --defense client-dp:epsilon=E,delta=D")
    m = opts.num_canaries or DEFAULT_CANARIES["client"]
    if m < 4:
        raise FedleakInputError(f"--num-canaries {m}: give at least 4")
    cfg = FedConfig(clients=opts.clients, rounds=opts.rounds, mode="fedavg", lr=opts.lr, seed=opts.seed)
    if opts.flower:
        return _flower_client(opts, train, test, model, agg, m, cfg)
    dim = sum(p.numel() for p in model.parameters() if p.requires_grad)
    wrapper = CanaryClientAggregator.draw(agg, m, dim, opts.seed, opts.magnitude * agg.clip)
    agg.population = opts.clients + int(wrapper.included.sum())
    agg.planned_rounds = opts.rounds
    fed = Federation(model, train, test, cfg, aggregator=wrapper)
    w0 = flatten({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}).double()
    acc = _train(fed)
    delta = flatten({n: p.detach() for n, p in fed.model.named_parameters() if p.requires_grad}).double() - w0
    scores = cosine_scores(wrapper.directions, delta)
    threat = "server: the final model delta (w_T - w_0) only"
    return _Run(scores, wrapper.included, agg.privacy(), acc, threat, white_box=True)


def _flower_client(
    opts: DPAuditOptions, train: Dataset, test: Dataset, model: Any, agg: ClientDPAggregator, m: int, cfg: FedConfig
) -> _Run:
    """Canary clients in a Flower simulation under Flower's DP wrapper, with the noise multiplier and clipping
    norm of the ``client-dp`` spec (a target epsilon calibrated for every client in every round)."""
    from fedleak.flower.dp_audit import run_flower_canaries

    if opts.device != "cpu":
        raise FedleakInputError("--flower runs the clients on Flower's CPU actors: leave --device at cpu")
    z = agg.noise
    if z is None:
        assert agg.target_epsilon is not None
        z = calibrate_noise(agg.target_epsilon, agg.delta, 1.0, opts.rounds, agg.accountant)
    run = run_flower_canaries(
        model.cpu(),
        train,
        test,
        cfg,
        noise_multiplier=z,
        clipping_norm=agg.clip,
        delta=agg.delta,
        num_canaries=m,
        side=opts.flower,  # type: ignore[arg-type]
        magnitude=opts.magnitude,
        seed=opts.seed,
        dp_factory=opts.mechanism,
    )
    threat = f"server: the final model delta (w_T - w_0) of a Flower run under {run.wrapper}"
    return _Run(run.scores, run.included, run.privacy, run.test_accuracy, threat, True, "flower", run.wrapper)


def run_dp_audit(
    opts: DPAuditOptions, out: Path | None = None, echo: Callable[[str], None] | None = None
) -> DPAuditResult:
    """Run one canary audit; with ``out``, write ``results.json`` and ``canary_scores.png`` there."""
    t0 = time.perf_counter()
    case = CANARY_KINDS.get(opts.canaries)
    if opts.rounds < 1 or opts.clients < 2:
        raise FedleakInputError("audit-dp: need at least 1 round and 2 clients")
    if opts.num_canaries is not None and opts.num_canaries < 4:
        raise FedleakInputError(f"--num-canaries {opts.num_canaries}: give at least 4")
    if not 0 < opts.magnitude < math.inf:
        raise FedleakInputError("audit-dp: the canary magnitude must be a finite number > 0")
    if opts.flower is not None and (opts.flower not in ("server", "client") or opts.canaries != "client"):
        raise FedleakInputError(
            f"--flower {opts.flower}: Flower's DP wrappers are client-level DP, audited with --canaries client and "
            "--flower server (the server clips each update) or --flower client (fixedclipping_mod on the clients)"
        )
    dev = resolve_device(opts.device)
    torch.manual_seed(opts.seed)
    data = fedleak.data.load(opts.dataset)
    train, test = data.split(0.2, seed=opts.seed)
    plan = defense_plan([opts.defense])
    model = plan.prepare(fedleak.models.build(opts.model, data.spec, seed=opts.seed)).to(dev)
    run = case(opts, (train, test), model, plan, dev)
    priv = run.privacy
    eps, delta = priv.get("epsilon"), priv.get("delta")
    if eps is None or delta is None:
        raise FedleakInputError(f"--defense {opts.defense}: no accountant epsilon to audit")
    bound = canary_lower_bound(run.scores, run.included, delta, opts.confidence, opts.seed)
    est = one_shot_estimate(run.scores, run.included, delta) if run.white_box else None
    res = DPAuditResult(
        dataset=opts.dataset,
        model=opts.model,
        defense=opts.defense,
        canary_kind=opts.canaries,
        seed=opts.seed,
        epsilon=float(eps),
        delta=float(delta),
        epsilon_lower_bound=float(bound["epsilon_lower_bound"]),
        epsilon_estimate=None if est is None else float(est["epsilon_estimate"]),
        included=[bool(v) for v in run.included],
        scores=[float(v) for v in run.scores],
        bound=bound,
        estimate=est,
        accountant={k: v for k, v in priv.items() if k != "history"},
        rounds=opts.rounds,
        clients=opts.clients,
        test_accuracy=run.accuracy,
        seconds=time.perf_counter() - t0,
        threat_model=run.threat,
        notes=list(priv.get("notes", [])),
        engine=run.engine,
        mechanism=run.mechanism,
    )
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        histogram(res, out / "canary_scores.png")
        atomic_write_json(out / "results.json", res.to_dict())
    if echo is not None:
        echo(summary(res))
    return res


def summary(res: DPAuditResult) -> str:
    c = res.counts
    est = "n/a (black-box scores)" if res.epsilon_estimate is None else f"{res.epsilon_estimate:.2f} (an estimate)"
    on = f" on Flower under {res.mechanism}" if res.engine == "flower" else ""
    return "\n".join(
        [
            f"{res.defense}{on}, {res.canary_kind} canaries: {c['total']} ({c['included']} included, "
            f"{c['held_out']} held out), 1 run, {res.rounds} rounds, {res.clients} clients, "
            f"test accuracy {res.test_accuracy:.3f}",
            f"accountant epsilon {res.epsilon:.2f} at delta {res.delta:g} ({res.accountant.get('accountant')})",
            f"empirical lower bound {res.epsilon_lower_bound:.2f} ({res.bound['confidence']:.0%} confidence)",
            f"one-shot estimate {est}",
            res.verdict,
        ]
    )


def histogram(res: DPAuditResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s, inc = np.asarray(res.scores), np.asarray(res.included)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.histogram_bin_edges(s, bins=50)
    ax.hist(s[~inc], bins=bins, alpha=0.6, label=f"held out ({int((~inc).sum())})")
    ax.hist(s[inc], bins=bins, alpha=0.6, label=f"included ({int(inc.sum())})")
    ax.set_xlabel(f"canary score ({res.canary_kind})")
    ax.set_ylabel("canaries")
    est = "" if res.epsilon_estimate is None else f", estimate {res.epsilon_estimate:.2f}"
    ax.set_title(f"{res.defense}: eps {res.epsilon:.2f}, bound {res.epsilon_lower_bound:.2f}{est}", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
