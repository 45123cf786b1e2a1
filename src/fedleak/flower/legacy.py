"""The curious server in a legacy Flower app (``flwr.server.strategy``: ``configure_fit`` /
``aggregate_fit``), the path Flower's secure aggregation (``SecAggPlusWorkflow``) still runs on.

    from flwr.server.strategy import FedAvg
    from fedleak.flower import LegacyAuditingStrategy

    strategy = LegacyAuditingStrategy(FedAvg(...), attacks=["analytic"], model=net)
    context = LegacyContext(context=context, config=ServerConfig(num_rounds=3), strategy=strategy)
    DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(num_shares=3, reconstruction_threshold=2))(grid, context)
    strategy.auditor.summary()["secure_aggregation"]     # True: the server saw only the aggregate

Legacy replies carry unnamed arrays in the order of the model's ``state_dict()``, so ``model`` is needed.
Under SecAgg+ every ``FitRes`` handed to ``aggregate_fit`` carries the same unmasked aggregate: the auditor
then forms one view (``client=None``, ``num_clients=K``, ``num_samples`` = the sum of the counts that travel
in the clear) and attacks that.
"""

from __future__ import annotations

import logging
from typing import Any

from flwr.common import EvaluateIns, EvaluateRes, FitIns, FitRes, Parameters, Scalar, parameters_to_ndarrays
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import Strategy

from fedleak.flower.auditor import Reply
from fedleak.flower.views import to_tensors
from fedleak.flower.wrapping import AuditingWrapper

log = logging.getLogger("fedleak.flower")


def _node(proxy: ClientProxy) -> int | None:
    nid = getattr(proxy, "node_id", None)
    if isinstance(nid, int):
        return nid
    try:
        return int(proxy.cid)
    except (TypeError, ValueError):
        return None


class LegacyAuditingStrategy(AuditingWrapper, Strategy):
    """Wraps a legacy strategy; same arguments and records as :class:`fedleak.flower.AuditingStrategy`."""

    def _tensors(self, parameters: Parameters) -> dict:
        return to_tensors(parameters_to_ndarrays(parameters), self.auditor.state_names)

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return self.inner.initialize_parameters(client_manager)

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        instructions = self.inner.configure_fit(server_round, parameters, client_manager)
        try:
            cache: dict[int, Any] = {}
            sent = {}
            for proxy, ins in instructions:
                if id(ins.parameters) not in cache:
                    cache[id(ins.parameters)] = self._tensors(ins.parameters)
                sent[_node(proxy)] = (cache[id(ins.parameters)], dict(ins.config))
            self.auditor.begin_round(server_round, sent)
        except Exception as e:  # never break the training being watched
            self.auditor.errors.append(f"round {server_round}, configure_fit: {type(e).__name__}: {e}")
            log.warning("fedleak audit: %s", self.auditor.errors[-1])
        return instructions

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        try:
            cache: dict[int, Any] = {}
            replies = []
            for proxy, res in results:
                if id(res.parameters) not in cache:  # SecAgg+ hands every result the same aggregate object
                    cache[id(res.parameters)] = self._tensors(res.parameters)
                metrics = {**dict(res.metrics or {}), self.auditor.keys.num_examples: res.num_examples}
                replies.append(Reply(node_id=_node(proxy), arrays=cache[id(res.parameters)], metrics=metrics))
            self.auditor.observe(server_round, replies)
        except Exception as e:
            self.auditor.errors.append(f"round {server_round}, aggregate_fit: {type(e).__name__}: {e}")
            log.warning("fedleak audit: %s", self.auditor.errors[-1])
        return self.inner.aggregate_fit(server_round, results, failures)

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        return self.inner.configure_evaluate(server_round, parameters, client_manager)

    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list[tuple[ClientProxy, EvaluateRes] | BaseException],
    ) -> tuple[float | None, dict[str, Scalar]]:
        return self.inner.aggregate_evaluate(server_round, results, failures)

    def evaluate(self, server_round: int, parameters: Parameters) -> tuple[float, dict[str, Scalar]] | None:
        return self.inner.evaluate(server_round, parameters)
