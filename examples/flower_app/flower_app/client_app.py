"""The user's ClientApp. The audit needs nothing from the clients; the one line marked below only tells the
server which data partition a reply comes from (Flower's node ids are random), so that the audit can score
what it rebuilt against that partition in a simulation."""

from __future__ import annotations

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from flower_app.task import Net, load_data, train

app = ClientApp()


@app.train()
def train_fn(msg: Message, context: Context) -> Message:
    pid = int(context.node_config["partition-id"])
    parts = int(context.node_config["num-partitions"])
    config = msg.content["config"]
    x, y = load_data(pid, parts, records=int(config.get("records-per-client", 32)))
    net = Net()
    net.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    loss = train(
        net,
        x,
        y,
        epochs=int(config["local-epochs"]),
        batch_size=int(config["batch-size"]),
        lr=float(config["lr"]),
        seed=1000 * int(config["server-round"]) + pid,
    )
    content = RecordDict(
        {
            "arrays": ArrayRecord(net.state_dict()),
            # "partition-id": which partition this is (fedleak's WireKeys.client), for scoring in a simulation
            "metrics": MetricRecord({"train_loss": loss, "num-examples": len(x), "partition-id": pid}),
        }
    )
    return Message(content=content, reply_to=msg)
