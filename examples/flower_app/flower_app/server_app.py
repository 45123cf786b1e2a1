"""The user's ServerApp with its strategy wrapped by fedleak's :class:`AuditingStrategy` (the change, marked
below): every client reply becomes a ``ClientUpdate`` the server could attack with the attacks that fit it
(FedAvg deltas: the FedAvg replay), and when the run ends the findings become a fedleak run folder
(``results.json`` and ``report.html``), each reconstruction scored against the partition it came from.

The audit reads the training hyperparameters from the train config the server sends (``lr``, ``batch-size``,
``local-epochs``) and the sample count from each reply's metrics (``num-examples``); if your app names them
otherwise, pass ``keys=WireKeys(...)``.
"""

from __future__ import annotations

from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from fedleak.data.dataset import DataSpec
from fedleak.flower import AuditingStrategy
from fedleak.flower.runfolder import write_flower_run
from flower_app.task import Net, accuracy, load_data

# what the server knows of the data format: 8x8 grey images in [0, 1], 10 classes (no normalisation)
DIGITS = DataSpec("digits", "image", (1, 8, 8), 10, tuple(str(i) for i in range(10)), (0.0,), (1.0,))


def build_strategy(
    fraction_train: float = 1.0, attacks: list | None = None, out: str = "runs/flower"
) -> AuditingStrategy:
    inner = FedAvg(fraction_train=fraction_train, fraction_evaluate=0.0)
    # ---- the change: wrap the strategy, handing over the clients' own torch model ---------------------------
    # "auto": the attacks that fit each reply (here FedAvg deltas: the FedAvg replay of the local SGD), with a
    # budget of 50 optimiser steps so the example runs in a minute; the replay rebuilds Net itself, so nothing
    # needs registering with fedleak.
    return AuditingStrategy(
        inner,
        attacks=attacks if attacks is not None else [("auto", {"iterations": 50})],
        model=Net(),
        data_spec=DIGITS,
        views_dir=f"{out}/views",  # what the server saw, as safetensors (attacks run on a worker thread)
    )


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    rounds = int(cfg.get("num-server-rounds", 3))
    out = str(cfg.get("audit-out", "runs/flower"))
    strategy = build_strategy(float(cfg.get("fraction-train", 1.0)), out=out)
    x_test, y_test = load_data(0, 1, seed=1)

    def evaluate(rnd: int, arrays: ArrayRecord) -> MetricRecord:
        net = Net()
        net.load_state_dict(arrays.to_torch_state_dict())
        return MetricRecord({"accuracy": accuracy(net, x_test, y_test)})

    train_config = ConfigRecord(
        {"lr": 0.1, "batch-size": 16, "local-epochs": 1, "records-per-client": int(cfg.get("records-per-client", 32))}
    )
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(Net().state_dict()),
        num_rounds=rounds,
        train_config=train_config,
        evaluate_fn=evaluate,
    )
    # ---- and the findings as a fedleak run folder, scored against each simulated client's partition -------
    parts, per_client = int(cfg.get("num-partitions", 1)), int(cfg.get("records-per-client", 32))
    write_flower_run(
        out,
        strategy.auditor,
        accuracy={int(k): float(v["accuracy"]) for k, v in result.evaluate_metrics_serverapp.items()},
        records_of=lambda partition: load_data(partition, parts, records=per_client),
        app={
            "model": "flower_app.task.Net",
            "dataset": "digits (scikit-learn, 8x8)",
            "partition": f"equal random shares, first {per_client} records each",
            "strategy": "FedAvg",
            "clients": parts,
            "rounds": rounds,
        },
    )
