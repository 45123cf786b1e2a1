"""Flower's DP wrappers audited with canary clients, in a Flower simulation (Andrew et al., ICLR 2024).

Flower ships client-level central DP as strategy wrappers: ``DifferentialPrivacyServerSideFixedClipping``
(the server clips each reply's update to ``clipping_norm``, then adds Gaussian noise of standard deviation
``noise_multiplier * clipping_norm / num_sampled_clients`` to the aggregate) and
``DifferentialPrivacyClientSideFixedClipping`` (each client clips in Flower's ``fixedclipping_mod``; the
server only adds the noise). This module audits what such a Flower run delivers:

- :class:`CanaryClients` is a Flower strategy wrapped around the DP wrapper. In every round it hands the DP
  wrapper, beside the real clients' replies, one reply per *included* canary client: the model it was sent
  plus ``magnitude`` times the canary's random unit direction (over every floating array Flower clips).
  With client-side clipping each canary reply first passes through Flower's own ``fixedclipping_mod``, as a
  real client's does. Canaries are included or held out by a seeded coin
  (:func:`fedleak.defenses.canaries.draw_inclusion`); the scorer never reads it. A canary claims the
  largest ``num-examples`` of the round's real replies (the most exposed real client), so Flower's weighted
  FedAvg gives it no less weight than any real client.
- Each canary is scored from what the server ends with: the cosine between its direction and the final model
  delta w_T - w_0 (the sum of every round's noisy aggregate step; :func:`fedleak.defenses.canaries.cosine_scores`).
- :func:`run_flower_canaries` runs fedleak's federation on Flower's simulation engine
  (:func:`fedleak.flower.federation.run_flower_federation`; never ``flwr run``) with the strategy so wrapped,
  and gives the scores, the coins and the accountant's epsilon for Flower's noise multiplier, clients per round
  and rounds (Flower's own RDP accountant, no amplification: every client takes part in every round).

Flower draws its DP noise from numpy's global generator; :class:`CanaryClients` seeds it for the span of each
round's aggregation (and restores it), so that one seed gives the same figures.

The case that turns the scores into the lower bound and the one-shot estimate is
:func:`fedleak.audit.dpaudit.run_dp_audit` (``fedleak audit-dp --flower server|client --canaries client``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from torch import nn

from fedleak.data.dataset import Dataset
from fedleak.defenses.accounting import epsilon as fedleak_epsilon
from fedleak.defenses.canaries import cosine_scores, draw_inclusion, unit_directions
from fedleak.errors import FedleakInputError
from fedleak.fl.server import FedConfig
from fedleak.flower.federation import FlowerDP, RayOptions, run_flower_federation

Side = Literal["server", "client"]
DPFactory = Callable[[Strategy, float, float, int], Strategy]
CANARY_NODE_BASE = 1 << 62  # node ids of canary clients (Flower's simulated nodes draw theirs at random)


def flower_dp_wrapper(side: Side) -> DPFactory:
    """Flower's fixed-clipping DP wrapper class for ``side`` (called as ``cls(strategy, z, clip, n)``)."""
    from flwr.serverapp import strategy as S

    try:
        return {
            "server": S.DifferentialPrivacyServerSideFixedClipping,
            "client": S.DifferentialPrivacyClientSideFixedClipping,
        }[side]
    except KeyError:
        raise FedleakInputError(f"--flower {side}: choose server or client (where Flower clips)") from None


def flower_epsilon(noise_multiplier: float, rounds: int, clients: int, delta: float) -> dict[str, Any]:
    """The epsilon Flower's own accountant (RDP over Google's dp-accounting) gives for ``rounds`` Gaussian
    releases of noise ``noise_multiplier`` with every one of ``clients`` clients in every round."""
    from flwr.supercore.privacy_accounting import (
        GaussianPrivacyEvent,
        NeighboringRelation,
        PrivacyConfig,
        SamplingMethod,
    )
    from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

    acc = RdpAccountant(
        PrivacyConfig(delta, clients, NeighboringRelation.ADD_OR_REMOVE_ONE, SamplingMethod.NO_AMPLIFICATION)
    )
    acc.compose(GaussianPrivacyEvent(noise_multiplier, clients, clients), rounds)
    spent = acc.get_privacy_spent()
    return {"epsilon": spent.epsilon, "delta": spent.delta, "releases": spent.num_releases, "method": "flower-rdp"}


class CanaryClients(Strategy):
    """Wraps a Flower DP strategy; the included canary clients' replies join every round's replies.

    ``directions``: (m, d) unit rows over the concatenated floating arrays named ``names`` (the model's state
    in order); canary i sends ``sent + magnitude * directions[i]``. ``mods``: the client mods a real client's
    reply passes through (Flower's ``fixedclipping_mod`` for client-side clipping). ``w0`` and ``final``: the
    server's model before the first round and after the last (numpy arrays by name).
    """

    def __init__(
        self,
        inner: Strategy,
        directions: torch.Tensor,
        included: np.ndarray,
        magnitude: float,
        names: Sequence[str],
        *,
        mods: Sequence[Any] = (),
        seed: int = 0,
    ) -> None:
        self.inner, self.directions, self.included = inner, directions, np.asarray(included, dtype=bool)
        self.magnitude, self.names, self.mods, self.seed = float(magnitude), list(names), list(mods), seed
        self.w0: dict[str, np.ndarray] | None = None
        self.final: dict[str, np.ndarray] | None = None
        self.rounds = 0
        self._sent: Message | None = None

    def __getattr__(self, name: str) -> Any:  # what the wrapped strategy has (e.g. num_sampled_clients)
        inner = self.__dict__.get("inner")
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)

    def summary(self) -> None:
        self.inner.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages = list(self.inner.configure_train(server_round, arrays, config, grid))
        if self.w0 is None:
            self.w0 = {k: a.numpy().copy() for k, a in arrays.items()}
        self._sent = messages[0] if messages else None
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        real = [m for m in replies if not m.has_error()]
        canaries = self._canary_replies(real) if real and self._sent is not None else []
        outer = np.random.get_state()  # Flower's noise comes from numpy's global generator: seed it per round
        np.random.seed([self.seed, 0xF1DB, server_round])
        try:
            arrays, metrics = self.inner.aggregate_train(server_round, replies + canaries)
        finally:
            np.random.set_state(outer)
        if arrays is not None:
            self.final = {k: a.numpy().copy() for k, a in arrays.items()}
            self.rounds += 1
        return arrays, metrics

    def _canary_replies(self, real: list[Message]) -> list[Message]:
        sent = self._sent
        assert sent is not None
        akey = next(iter(sent.content.array_records))
        base = {k: a.numpy() for k, a in sent.content[akey].items()}
        metrics = max((dict(next(iter(m.content.metric_records.values()))) for m in real), key=_weight)
        step = (self.magnitude * self.directions).numpy()
        out = []
        for j, i in enumerate(np.flatnonzero(self.included)):
            instruction = Message(sent.content, dst_node_id=CANARY_NODE_BASE + int(i), message_type=MessageType.TRAIN)
            arrays, at = {}, 0
            for k in base:
                v = base[k]
                if k in self.names:
                    n = v.size
                    v = (v + step[i, at : at + n].reshape(v.shape)).astype(v.dtype)
                    at += n
                arrays[k] = Array(np.ascontiguousarray(v))
            reply = Message(
                RecordDict({akey: ArrayRecord(arrays), "metrics": MetricRecord(metrics)}), reply_to=instruction
            )
            out.append(self._through_mods(instruction, reply, j))
        return out

    def _through_mods(self, instruction: Message, reply: Message, j: int) -> Message:
        """The canary's reply as a real client's leaves it: through the same client mods (e.g. Flower's
        fixedclipping_mod), run here on the canary's instruction."""
        call: Callable[[Message, Context], Message] = lambda msg, ctx: reply  # noqa: E731
        for mod in reversed(self.mods):
            call = (lambda m, nxt: lambda msg, ctx: m(msg, ctx, nxt))(mod, call)
        ctx = Context(
            run_id=instruction.metadata.run_id,
            node_id=CANARY_NODE_BASE + j,
            node_config={},
            state=RecordDict(),
            run_config={},
        )
        out = call(instruction, ctx)
        if out.has_error():
            raise RuntimeError(f"a canary client's mods refused its reply: {out.error.reason}")
        return out

    def configure_evaluate(self, *args: Any, **kw: Any) -> Iterable[Message]:  # the wrapped strategy's, as is
        return self.inner.configure_evaluate(*args, **kw)

    def aggregate_evaluate(self, *args: Any, **kw: Any) -> MetricRecord | None:
        return self.inner.aggregate_evaluate(*args, **kw)

    def final_delta(self) -> torch.Tensor:
        """w_T - w_0 over the canaries' arrays, flattened in their order (float64)."""
        if self.w0 is None or self.final is None:
            raise RuntimeError("the Flower run released no aggregate: nothing to score")
        return torch.cat(
            [
                torch.as_tensor(self.final[k], dtype=torch.float64).reshape(-1)
                - torch.as_tensor(self.w0[k], dtype=torch.float64).reshape(-1)
                for k in self.names
            ]
        )


def _weight(metrics: dict[str, Any]) -> float:
    return float(metrics.get("num-examples", 0))


@dataclass
class FlowerCanaryRun:
    """What :func:`run_flower_canaries` gives: one score per canary, the coins, the accountant, the run."""

    scores: np.ndarray
    included: np.ndarray
    privacy: dict[str, Any]
    test_accuracy: float
    wrapper: str
    seconds: float


def run_flower_canaries(
    model: nn.Module,
    train: Dataset,
    test: Dataset,
    config: FedConfig,
    *,
    noise_multiplier: float,
    clipping_norm: float,
    delta: float,
    num_canaries: int,
    side: Side = "server",
    magnitude: float = 2.0,
    seed: int = 0,
    dp_factory: DPFactory | None = None,
    ray: RayOptions | None = None,
) -> FlowerCanaryRun:
    """Run ``config``'s federation on Flower with Flower's DP wrapper for ``side`` and ``num_canaries`` canary
    clients (each sends ``magnitude * clipping_norm`` along its direction); score them (see the module
    docstring). Every real client takes part in every round (``config.fraction`` must be 1).

    ``dp_factory``: builds the DP strategy as ``factory(strategy, noise_multiplier, clipping_norm,
    num_sampled_clients)``, in place of Flower's wrapper class (the tests plug deliberately broken setups in
    here); the accountant's epsilon is always the one claimed for ``noise_multiplier``.
    """
    if config.fraction != 1.0:
        raise FedleakInputError("the Flower canary audit takes every client in every round: leave --fraction at 1")
    if not (0 < noise_multiplier < float("inf") and 0 < clipping_norm < float("inf")):
        raise FedleakInputError("Flower's DP wrapper: need a noise multiplier > 0 and a clipping norm > 0")
    if num_canaries < 4:
        raise FedleakInputError(f"--num-canaries {num_canaries}: give at least 4")
    state = model.state_dict()
    names = [k for k, v in state.items() if v.is_floating_point()]
    dim = sum(state[k].numel() for k in names)
    included = draw_inclusion(num_canaries, seed)
    directions = unit_directions(num_canaries, dim, seed)
    factory = dp_factory or flower_dp_wrapper(side)
    mods: list[Any] = []
    if side == "client":
        from flwr.clientapp.mod import fixedclipping_mod

        mods.append(fixedclipping_mod)
    holder: dict[str, CanaryClients] = {}

    def build(inner: Strategy, n: int) -> Strategy:  # n: the real clients per round; the canaries join them
        dp = factory(inner, noise_multiplier, clipping_norm, n + int(included.sum()))
        holder["s"] = CanaryClients(dp, directions, included, magnitude * clipping_norm, names, mods=mods, seed=seed)
        return holder["s"]

    run = run_flower_federation(
        copy.deepcopy(model),
        train,
        test,
        config,
        dp=FlowerDP(noise_multiplier, clipping_norm, side, build=build),
        attacks=[],
        ray=ray,
    )
    canaries = holder["s"]
    if canaries.rounds != config.rounds:
        raise RuntimeError(f"Flower released {canaries.rounds} of {config.rounds} aggregates: audit invalid")
    population = config.clients + int(included.sum())
    acct = flower_epsilon(noise_multiplier, config.rounds, population, delta)
    dp = canaries.inner
    wrapper = type(dp).__name__
    privacy = {
        "level": "client",
        "mechanism": f"Flower {wrapper} (noise multiplier {noise_multiplier:.4g}, clipping norm {clipping_norm:g})",
        "epsilon": acct["epsilon"],
        "delta": delta,
        "accountant": "flower-rdp",
        "epsilon_by_accountant": {
            "flower-rdp": acct["epsilon"],
            "rdp": fedleak_epsilon([(noise_multiplier, 1.0, config.rounds)], delta, "rdp"),
        },
        "noise_multiplier": noise_multiplier,
        "clip": clipping_norm,
        "rounds": config.rounds,
        "steps": config.rounds,
        "sample_rate": 1.0,
        "clients_per_round": population,
        "num_sampled_clients": getattr(dp, "num_sampled_clients", None),
        "engine": "flower",
        "clipping": side,
        "notes": [],
    }
    return FlowerCanaryRun(
        cosine_scores(directions, canaries.final_delta()),
        included,
        privacy,
        run.final_accuracy,
        wrapper,
        run.seconds,
    )
