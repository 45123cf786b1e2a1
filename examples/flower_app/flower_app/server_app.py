"""The user's ServerApp with its strategy wrapped by fedleak's :class:`AuditingStrategy` (the only change,
marked below): every client reply becomes a ``ClientUpdate`` the server could attack, and the findings are
written to ``audit.json`` when the run ends.

The audit reads the training hyperparameters from the train config the server sends (``lr``, ``batch-size``,
``local-epochs``) and the sample count from each reply's metrics (``num-examples``); if your app names them
otherwise, pass ``keys=WireKeys(...)``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from fedleak.data.dataset import DataSpec
from fedleak.flower import AuditingStrategy
from flower_app.task import Net, accuracy, load_data

# what the server knows of the data format: 8x8 grey images in [0, 1], 10 classes (no normalisation)
DIGITS = DataSpec("digits", "image", (1, 8, 8), 10, tuple(str(i) for i in range(10)), (0.0,), (1.0,))


def update_norm(update) -> float:  # noqa: ANN001  (any callable on a ClientUpdate is an attack)
    """How far this client moved the model: a cheap first look at who contributes what."""
    return math.sqrt(sum(float(v.pow(2).sum()) for v in update.payload.values()))


def build_strategy(fraction_train: float = 1.0, attacks: list | None = None) -> AuditingStrategy:
    inner = FedAvg(fraction_train=fraction_train, fraction_evaluate=0.0)
    # ---- the one change: wrap the strategy -----------------------------------------------------------------
    # "mlp" is fedleak's name for the same architecture as Net (same layers, same parameter names), so
    # attacks that rebuild the model (e.g. "fedavg", which replays the client's local SGD) can run.
    return AuditingStrategy(
        inner,
        attacks=attacks if attacks is not None else [update_norm],
        model="mlp",
        data_spec=DIGITS,
    )


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    rounds = int(cfg.get("num-server-rounds", 3))
    strategy = build_strategy(float(cfg.get("fraction-train", 1.0)))
    x_test, y_test = load_data(0, 1, seed=1)

    def evaluate(rnd: int, arrays: ArrayRecord) -> MetricRecord:
        net = Net()
        net.load_state_dict(arrays.to_torch_state_dict())
        return MetricRecord({"accuracy": accuracy(net, x_test, y_test)})

    train_config = ConfigRecord({"lr": 0.1, "batch-size": 16, "local-epochs": 1})
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(Net().state_dict()),
        num_rounds=rounds,
        train_config=train_config,
        evaluate_fn=evaluate,
    )
    report = {
        "audit": strategy.auditor.summary(),
        "findings": [
            {
                "round": f.round,
                "client": f.client,
                "seen": f.seen,
                "attack": f.attack,
                "error": f.error,
                "result": f.result if isinstance(f.result, float | int) else type(f.result).__name__,
            }
            for f in strategy.findings
        ],
        "accuracy": {str(k): float(v["accuracy"]) for k, v in result.evaluate_metrics_serverapp.items()},
    }
    Path(str(cfg.get("audit-out", "audit.json"))).write_text(json.dumps(report, indent=2))
