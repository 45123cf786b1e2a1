"""Run the example on Flower's simulation engine from Python (no `flwr run`, nothing downloaded):

    FLWR_TELEMETRY_ENABLED=0 python examples/flower_app/run.py --clients 3 --rounds 2 --out runs/flower

The audit's findings land in a fedleak run folder: OUT/results.json and OUT/report.html.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clients", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--client-cpus", type=float, default=1.0)
    p.add_argument("--records-per-client", type=int, default=32)
    p.add_argument("--out", default="runs/flower", help="run folder for results.json and report.html")
    a = p.parse_args()

    from flower_app import server_app
    from flower_app.client_app import app as client_app
    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    run_config = {
        "num-server-rounds": a.rounds,
        "audit-out": a.out,
        "num-partitions": a.clients,
        "records-per-client": a.records_per_client,
    }
    server = ServerApp()

    @server.main()
    def main_with_config(grid, context):  # noqa: ANN001, ANN202  (run_simulation passes an empty run config)
        context.run_config.update(run_config)
        return server_app.main(grid, context)

    run_simulation(
        server_app=server,
        client_app=client_app,
        num_supernodes=a.clients,
        backend_config={"client_resources": {"num_cpus": a.client_cpus, "num_gpus": 0.0}},
    )
    print(f"wrote {Path(a.out) / 'results.json'} and {Path(a.out) / 'report.html'}")


if __name__ == "__main__":
    main()
