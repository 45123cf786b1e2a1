"""The same federated setup as :class:`fedleak.fl.Federation`, run as Flower ClientApps and a ServerApp on
Flower's simulation engine (Ray), from Python, with no downloads. What ``audit`` calls for ``engine =
"flower"``.

    data = fedleak.data.load("digits"); train, test = data.split(0.2, seed=0)
    run = run_flower_federation(fedleak.models.build("mlp", data.spec, seed=0), train, test,
                                FedConfig(clients=3, rounds=2, mode="fedsgd", batch_size=1),
                                attacks=["analytic"])
    run.rounds[-1].test_accuracy, run.rounds[-1].updates[0].client, run.findings[0].result

Per round it gives what ``Federation.run()`` yields (a :class:`~fedleak.fl.RoundResult` with the test accuracy
and loss of the global model, and each sampled client's ``ClientUpdate`` as the auditing strategy saw it on
the server), plus the final global model. The server first asks each virtual node for its partition index
(one query message), so that it samples the same clients as the local engine with the same seed; Flower's
FedAvg then aggregates weighted by ``num-examples``, as ``weighted_mean`` does.

``secagg=True`` runs the legacy path under Flower's SecAgg+ workflow: the server (and so the audit) sees only
each round's aggregate. ``dp=FlowerDP(...)`` wraps the strategy in Flower's central-DP wrapper (fixed
clipping, server- or client-side); the audit sits outermost, so it sees what reached the server.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from fedleak.data.dataset import Dataset
from fedleak.errors import FedleakInputError
from fedleak.fl.client import UpdateTransform
from fedleak.fl.local import LocalTrainer, evaluate
from fedleak.fl.server import Aggregator, FedConfig, RoundResult
from fedleak.fl.update import ThreatModel
from fedleak.flower.apps import PARTITION_KEY, ClientTask, legacy_client_app, message_client_app
from fedleak.flower.auditor import AttackLike, Auditor, Finding, Reply
from fedleak.flower.views import build_update


@dataclass(frozen=True)
class FlowerDP:
    """Flower's central DP with fixed clipping: ``side="server"`` clips each update on the server
    (``DifferentialPrivacyServerSideFixedClipping``), ``"client"`` on the client (``fixedclipping_mod``)."""

    noise_multiplier: float
    clipping_norm: float
    side: Literal["server", "client"] = "server"
    # builds the server's DP strategy from the inner strategy and the clients per round, in place of Flower's
    # wrapper for ``side`` (fedleak.flower.dp_audit wraps Flower's wrapper with canary clients this way)
    build: Callable[[Any, int], Any] | None = None


@dataclass(frozen=True)
class RayOptions:
    """Where and how the simulation's ClientApps run: ``address`` of an existing Ray cluster (None: a local
    Ray instance of ``num_cpus``), and the CPUs each client actor takes (fractions allowed)."""

    address: str | None = None
    num_cpus: int | None = None  # None: all the CPUs of this machine
    client_cpus: float = 1.0

    def backend_config(self) -> dict[str, Any]:
        init: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.ERROR}
        if self.address:
            init["address"] = self.address
        elif self.num_cpus:
            init["num_cpus"] = self.num_cpus
        return {"init_args": init, "client_resources": {"num_cpus": self.client_cpus, "num_gpus": 0.0}}


@dataclass
class FlowerRun:
    """What a Flower run gives: per round the local engine's record, the final global model, the audit."""

    rounds: list[RoundResult]
    model: nn.Module
    auditor: Auditor
    engine: str = "flower"
    seconds: float = 0.0
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def findings(self) -> list[Finding]:
        return self.auditor.findings

    @property
    def final_accuracy(self) -> float:
        return self.rounds[-1].test_accuracy if self.rounds else float("nan")


def sampled_partitions(config: FedConfig) -> list[list[int]]:
    """The clients ``Federation`` samples in each round for this config and seed (same generator, same
    calls)."""
    rng = np.random.default_rng(config.seed)
    n = max(1, int(round(config.fraction * config.clients)))
    return [sorted(rng.choice(config.clients, size=n, replace=False).tolist()) for _ in range(config.rounds)]


class _Recorder:
    """Server-side evaluation after each round, turned into ``RoundResult`` records."""

    def __init__(self, model: nn.Module, test: Dataset, auditor: Auditor) -> None:
        self.model, self.auditor = copy.deepcopy(model).cpu(), auditor
        self.test_x, self.test_y = test.tensors()
        self.rounds: list[RoundResult] = []
        self.t0 = time.perf_counter()
        self.state: dict[str, torch.Tensor] = {}

    def __call__(self, rnd: int, state: Mapping[str, Any]) -> tuple[float, float]:
        self.state = {k: torch.as_tensor(np.array(v, copy=True)) for k, v in state.items()}
        self.model.load_state_dict(self.state)
        acc, loss = evaluate(self.model, self.test_x, self.test_y)
        if rnd > 0:
            views = sorted(
                (v for v in self.auditor.views if v.round == rnd),
                key=lambda v: (v.client is None, v.client or 0),
            )
            seen = self.auditor.seen.get(rnd, {})
            sampled = [c for c in seen.get("clients", []) if c is not None]
            now = time.perf_counter()
            self.rounds.append(RoundResult(rnd, acc, loss, sorted(sampled), views, now - self.t0))
            self.t0 = now
        return acc, loss


@contextlib.contextmanager
def _keep_running_ray() -> Iterator[None]:
    """A Ray session the caller started in this process is reused by Flower's backend, which then stops it at
    the end of the run; keep it running (so several runs, or reference training, share one session)."""
    try:
        import ray
    except ImportError:
        yield
        return
    if not ray.is_initialized():
        yield
        return
    real = ray.shutdown
    ray.shutdown = lambda *a, **k: None
    try:
        yield
    finally:
        ray.shutdown = real


def _quiet_flower(verbose: bool) -> int:
    lg = logging.getLogger("flwr")
    level = lg.level
    if not verbose:
        lg.setLevel(logging.WARNING)
    return level


def run_flower_federation(
    model: nn.Module,
    train: Dataset,
    test: Dataset,
    config: FedConfig,
    *,
    threat: ThreatModel | None = None,
    transforms: Sequence[UpdateTransform] = (),
    trainer: LocalTrainer | None = None,
    secagg: bool = False,
    dp: FlowerDP | None = None,
    aggregator: Aggregator | None = None,
    attacks: Iterable[AttackLike] | Mapping[str, Any] | None = None,
    ray: RayOptions | None = None,
    verbose: bool = False,
) -> FlowerRun:
    """Run ``config``'s federation on Flower's simulation engine; see the module docstring.

    Like ``Federation``, it leaves ``model`` holding the final global model (also ``FlowerRun.model``).
    ``threat`` is the view the audit keeps (default: all metadata and the labels, like ``Federation``; the
    labels then travel in an extra record of fedleak's own ClientApp). ``attacks`` run on every view as the
    rounds go (their findings are in ``FlowerRun.findings``).
    """
    config.validate()
    try:
        import flwr  # noqa: F401
    except ImportError:
        raise FedleakInputError(
            "engine 'flower' needs Flower: pip install 'fedleak[flower]' (flwr[simulation] with Ray)"
        ) from None
    if secagg and (dp is not None or aggregator is not None):
        raise FedleakInputError(
            "on the flower engine secure aggregation runs Flower's own FedAvg: drop the DP or aggregator "
            "defense, or secagg"
        )
    if dp is not None and aggregator is not None:
        raise FedleakInputError("choose Flower's DP wrapper (dp=) or fedleak's aggregator, not both")
    threat = threat or ThreatModel(labels=True)
    task = ClientTask.make(
        model,
        train,
        config,
        trainer=trainer,
        transforms=tuple(transforms),
        send_labels=threat.labels and not secagg,
    )
    # fedleak's own federation reads each round's views back at once and its findings after the run: in memory,
    # attacked inline (the audit pipeline times the attacks itself)
    auditor = Auditor.for_model(
        model, train.spec, attacks=attacks, record=True, threat=threat, keep_views="memory", attack_in="inline"
    )
    recorder = _Recorder(model, test, auditor)
    ray = ray or RayOptions()
    level = _quiet_flower(verbose)
    t0 = time.perf_counter()
    try:
        if secagg:
            server, client = _legacy_apps(task, auditor, recorder)
        else:
            server, client = _message_apps(task, auditor, recorder, dp, aggregator)
        from flwr.simulation import run_simulation

        with _keep_running_ray():
            run_simulation(
                server_app=server,
                client_app=client,
                num_supernodes=config.clients,
                backend_config=ray.backend_config(),
                verbose_logging=verbose,
            )
    finally:
        logging.getLogger("flwr").setLevel(level)
    if len(recorder.rounds) != config.rounds:
        raise RuntimeError(
            f"the Flower run ended after {len(recorder.rounds)} of {config.rounds} rounds; "
            f"audit errors: {auditor.errors[:3]}"
        )
    with torch.no_grad():  # like Federation, which trains the model it is given: it ends as the global model
        model.load_state_dict({k: v.to(next(model.parameters()).device) for k, v in recorder.state.items()})
    return FlowerRun(
        recorder.rounds,
        model,
        auditor,
        seconds=time.perf_counter() - t0,
        extras={"secagg": secagg, "dp": None if dp is None else {k: v for k, v in dp.__dict__.items() if k != "build"}},
    )


def _message_apps(
    task: ClientTask,
    auditor: Auditor,
    recorder: _Recorder,
    dp: FlowerDP | None,
    aggregator: Aggregator | None,
) -> tuple:
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg

    from fedleak.flower.strategy import AuditingStrategy, reply_of

    cfg = task.config
    plan = sampled_partitions(cfg)

    class SameClientsFedAvg(FedAvg):
        """Flower's FedAvg, sampling the clients fedleak's local engine samples (by partition index)."""

        node_of: dict[int, int] = {}

        def configure_train(
            self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
        ) -> Iterable[Message]:
            config["server-round"] = server_round
            record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
            nodes = [self.node_of[p] for p in plan[server_round - 1]]
            self.sent = (arrays_np(arrays), dict(config))
            return self._construct_messages(record, nodes, MessageType.TRAIN)

        def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple:
            if aggregator is None:
                return super().aggregate_train(server_round, replies)
            client_of = {nid: p for p, nid in self.node_of.items()}
            got = [(client_of.get(m.metadata.src_node_id), reply_of(m)) for m in replies if not m.has_error()]
            if not got:
                return None, None
            state = fedleak_aggregate(aggregator, self.sent[0], got, self.sent[1], server_round, cfg, auditor.names)
            return ArrayRecord(state), MetricRecord({})

    n = len(plan[0]) if plan else cfg.clients
    inner = SameClientsFedAvg(fraction_evaluate=0.0, min_train_nodes=n, min_available_nodes=cfg.clients)
    mods: list[Any] = []
    if dp is not None:
        from flwr.serverapp import strategy as S

        wrap = {
            "server": S.DifferentialPrivacyServerSideFixedClipping,
            "client": S.DifferentialPrivacyClientSideFixedClipping,
        }[dp.side]
        inner_dp = dp.build(inner, n) if dp.build else wrap(inner, dp.noise_multiplier, dp.clipping_norm, n)
        if dp.side == "client":
            from flwr.clientapp.mod import fixedclipping_mod

            mods.append(fixedclipping_mod)
    strategy = AuditingStrategy(inner_dp if dp is not None else inner, auditor=auditor)
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        while len(nodes := list(grid.get_node_ids())) < cfg.clients:
            time.sleep(0.2)
        ask = [
            Message(RecordDict({"config": ConfigRecord({})}), dst_node_id=nid, message_type=MessageType.QUERY)
            for nid in nodes
        ]
        node_of = {}
        for r in grid.send_and_receive(ask, timeout=600):
            if r.has_error():
                raise RuntimeError(f"node {r.metadata.src_node_id} did not say its partition: {r.error.reason}")
            node_of[int(r.content["metrics"][PARTITION_KEY])] = r.metadata.src_node_id
        inner.node_of = node_of
        auditor.client_ids.update({nid: p for p, nid in node_of.items()})

        def evaluate_fn(rnd: int, arrays: ArrayRecord) -> MetricRecord:
            acc, loss = recorder(rnd, arrays_np(arrays))
            return MetricRecord({"accuracy": acc, "loss": loss})

        strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(task.model.state_dict()),
            num_rounds=cfg.rounds,
            train_config=ConfigRecord(task.train_config()),
            evaluate_fn=evaluate_fn,
        )

    return server, message_client_app(task, train_mods=mods)


def fedleak_aggregate(
    aggregator: Aggregator,
    sent: Mapping[str, Any],
    replies: Sequence[tuple[int | None, Reply]],
    config: Mapping[str, Any],
    rnd: int,
    cfg: FedConfig,
    names: Sequence[str],
) -> dict[str, torch.Tensor]:
    """The server step of ``Federation`` with a fedleak aggregator (e.g. client-level DP) on Flower replies:
    the same updates in the same order (by client), the same seeded generator, the same apply rule."""
    state = {k: torch.as_tensor(np.array(v, copy=True)) for k, v in sent.items()}
    updates = [
        build_update(
            state,
            r.arrays,
            names=names,
            model="",
            config=config,
            metrics=r.metrics,
            client=c,
            round=rnd,
            threat=ThreatModel(True, True, True, True, True),
        )
        for c, r in sorted(replies, key=lambda cr: (cr[0] is None, cr[0] or 0))
    ]
    g = torch.Generator().manual_seed(cfg.seed * 7919 + rnd)
    agg = aggregator(updates, g)
    delta = updates[0].kind == "delta"
    sign = 1.0 if delta else -cfg.server_lr
    new = {k: v.clone() for k, v in state.items()}
    for k, v in agg.items():
        new[k] = new[k] + sign * v.to(new[k].dtype)
    if delta:  # buffers: the plain mean, as Federation.apply
        for k in new:
            if k not in agg and new[k].is_floating_point():
                new[k] = torch.stack([r.arrays[k].to(new[k].dtype) for _, r in replies]).mean(0)
    return new


def arrays_np(arrays: Any) -> dict[str, Any]:
    return {k: a.numpy() for k, a in arrays.items()}


def _legacy_apps(task: ClientTask, auditor: Auditor, recorder: _Recorder) -> tuple:
    from flwr.app import Context
    from flwr.client.mod import secaggplus_mod
    from flwr.common import ndarrays_to_parameters
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
    from flwr.serverapp import Grid, ServerApp

    from fedleak.flower.legacy import LegacyAuditingStrategy

    cfg = task.config
    names = list(task.model.state_dict())
    n = max(1, int(round(cfg.fraction * cfg.clients)))
    if n < 3:
        raise FedleakInputError(f"secure aggregation needs at least 3 clients per round (this config samples {n})")

    def evaluate_fn(rnd: int, ndarrays: list, _config: dict) -> tuple[float, dict]:
        acc, loss = recorder(rnd, dict(zip(names, ndarrays, strict=True)))
        return loss, {"accuracy": acc}

    inner = FedAvg(
        fraction_fit=cfg.fraction,
        fraction_evaluate=0.0,
        min_fit_clients=n,
        min_evaluate_clients=0,
        min_available_clients=cfg.clients,
        evaluate_fn=evaluate_fn,
        on_fit_config_fn=lambda rnd: {**task.train_config(), "server-round": rnd},
        initial_parameters=ndarrays_to_parameters([v.numpy() for v in task.model.state_dict().values()]),
    )
    strategy = LegacyAuditingStrategy(inner, auditor=auditor)
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=cfg.rounds), strategy=strategy)
        # each client scales its weights by num-examples / max_weight before quantising them: the tightest
        # max_weight keeps SecAgg's rounding error (about 16 / 2**22 * max_weight / num-examples) smallest
        sizes = [len(p) for p in task.parts]
        most = max(sizes) if cfg.mode == "fedavg" else min(cfg.batch_size, max(sizes))
        fit = SecAggPlusWorkflow(
            num_shares=n, reconstruction_threshold=max(2, n // 2 + 1), max_weight=float(max(1, most))
        )
        DefaultWorkflow(fit_workflow=fit)(grid, legacy)

    return server, legacy_client_app(task, [secaggplus_mod])
