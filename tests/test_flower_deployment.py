"""A real Flower deployment on loopback: a SuperLink and two SuperNodes as separate processes (insecure, runtime
dependency installation disabled, FLWR_HOME in a temporary folder), the example app (its FedAvg wrapped by
fedleak's auditing strategy) started on them through the SuperLink's Control API from Python (never `flwr run`),
and the audited run folder written by the ServerApp process."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

flwr = pytest.importorskip("flwr")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "flower_app"
BIN = Path(sys.executable).parent
STARTUP_S = 90  # the SuperLink answers its first request (about 25 s on a loaded 2-core machine)
DEADLINE_S = 420  # a 2-round run of 2 nodes; every ServerApp and ClientApp process starts cold (imports torch)


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _start_run(control: str, app: Path, overrides: dict) -> int:
    """What `flwr run` does, done directly: build the app's FAB and send StartRun to the Control API."""
    from flwr.cli.build import build_fab_from_disk
    from flwr.common.serde import fab_to_proto, user_config_to_proto
    from flwr.proto.control_pb2 import StartRunRequest
    from flwr.supercore.control.control_http_client import ControlHttpClient
    from flwr.supercore.fab import Fab
    from flwr.supercore.interceptors.http.runtime_version import RuntimeVersionHttpInterceptor

    fab_bytes = build_fab_from_disk(app)
    fab = Fab(hashlib.sha256(fab_bytes).hexdigest(), fab_bytes, {})
    client = ControlHttpClient.from_server_address(
        server_address=control,
        insecure=True,
        root_certificates=None,
        interceptors=[RuntimeVersionHttpInterceptor(component_name="flwr CLI")],
    )
    res = client.StartRun(StartRunRequest(fab=fab_to_proto(fab), override_config=user_config_to_proto(overrides)))
    return res.run_id


@pytest.mark.slow  # 284 s measured on a 2-core machine at load 10: each ServerApp/ClientApp process imports torch
def test_flower_deployment_superlink_supernodes_write_the_audited_run_folder(tmp_path):
    link, clientappio0, clientappio1 = _free_ports(3)  # Flower 1.42: Fleet, Control and runtime APIs on one port
    home = tmp_path / "flwr-home"
    home.mkdir()
    env = {
        **os.environ,
        "FLWR_HOME": str(home),
        "FLWR_TELEMETRY_ENABLED": "0",
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])  # the SuperLink starts flower-superexec
    env["PYTHONPATH"] = os.pathsep.join([str(EXAMPLE), env.get("PYTHONPATH", "")])
    app = tmp_path / "app"
    shutil.copytree(EXAMPLE, app, ignore=shutil.ignore_patterns("runs", "__pycache__"))
    out = tmp_path / "run"
    logs = {}
    procs = []

    def spawn(name, args):
        logs[name] = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115
        procs.append(subprocess.Popen(args, env=env, stdout=logs[name], stderr=subprocess.STDOUT, cwd=tmp_path))

    try:
        spawn(
            "superlink",
            [
                str(BIN / "flower-superlink"),
                "--insecure",
                "--disable-runtime-dependency-installation",
                "--host=127.0.0.1",
                f"--port={link}",
            ],
        )
        for i, cport in enumerate((clientappio0, clientappio1)):
            spawn(
                f"supernode{i}",
                [
                    str(BIN / "flower-supernode"),
                    "--insecure",
                    f"--superlink=127.0.0.1:{link}",
                    "--host=127.0.0.1",
                    f"--port={cport}",
                    f"--node-config=partition-id={i} num-partitions=2",
                ],
            )
        t0 = time.time()
        run_id, why = None, ""
        while run_id is None and time.time() - t0 < STARTUP_S:
            try:
                run_id = _start_run(
                    f"127.0.0.1:{link}",
                    app,
                    {"num-server-rounds": 2, "audit-out": str(out), "num-partitions": 2, "records-per-client": 16},
                )
            except Exception as e:  # the SuperLink is still starting
                why = f"{type(e).__name__}: {e}"
                time.sleep(1)
        assert run_id is not None, why
        while not (out / "report.html").exists() and time.time() - t0 < DEADLINE_S:
            time.sleep(1)
        if not (out / "report.html").exists():
            pytest.fail("no run folder; superlink log:\n" + (tmp_path / "superlink.log").read_text()[-3000:])
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        for f in logs.values():
            f.close()
    res = json.loads((out / "results.json").read_text())
    assert res["kind"] == "audit" and res["schema_version"] == 2
    (sc,) = res["scenarios"]
    rounds = {r["round"]: r for r in sc["training"]["rounds"]}
    for rnd in (1, 2):
        assert sorted(rounds[rnd]["clients"]) == [0, 1] and len(set(rounds[rnd]["node_ids"])) == 2
    assert sorted((e["round"], e["clients"]) for e in sc["inversion"]) == [(1, [0]), (1, [1]), (2, [0]), (2, [1])]
    assert all(len(e["targets"]) == 16 and "psnr" in e["targets"][0] for e in sc["inversion"])
