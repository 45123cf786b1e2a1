"""fedleak inside Flower: the auditing strategy wrappers, fedleak's federation on Flower's simulation engine
(Ray), SecAgg+ and DP wrappers, and reference models trained as Ray tasks.

The first tests drive the wrappers with hand-made Flower messages (no Ray); the ``test_flower_ray_*`` ones
run Flower's simulation engine or Ray tasks, all on one local Ray session started once for the module.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fedleak.data import load
from fedleak.errors import FedleakInputError
from fedleak.fl import FedConfig, Federation, ThreatModel, client_update, weighted_mean
from fedleak.metrics import psnr
from fedleak.models import build

flwr = pytest.importorskip("flwr")

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg  # noqa: E402

from fedleak.flower import AuditingStrategy, LegacyAuditingStrategy  # noqa: E402
from fedleak.flower.auditor import Auditor, Reply  # noqa: E402

RAY_CPUS = 2
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "flower_app"


@pytest.fixture(scope="module", autouse=True)
def flower_env(tmp_path_factory):
    """Flower writes under FLWR_HOME (a temporary folder here), no telemetry; Ray is down after the module."""
    old = {k: os.environ.get(k) for k in ("FLWR_HOME", "FLWR_TELEMETRY_ENABLED", "RAY_DEDUP_LOGS")}
    os.environ["FLWR_HOME"] = str(tmp_path_factory.mktemp("flwr-home"))
    os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # these models are tiny; on a shared 2-core machine more threads only contend
    yield
    torch.set_num_threads(threads)
    try:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    except ImportError:
        pass
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def ray_session(flower_env):
    """One local Ray instance for all Ray tests of this module (Flower's backend and the reference tasks reuse
    a running session; starting Ray is most of a simulation's time)."""
    import logging

    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        path = os.pathsep.join([str(EXAMPLE), *sys.path])  # workers import the example app's modules too
        ray.init(
            num_cpus=RAY_CPUS,
            include_dashboard=False,
            logging_level=logging.ERROR,
            log_to_driver=False,
            runtime_env={"env_vars": {"PYTHONPATH": path}},
        )
    yield ray
    ray.shutdown()


@pytest.fixture
def task_identity(monkeypatch):
    """Flower's Message constructor needs a run id, which a running ServerApp would set."""
    from flwr.supercore.task_identity import TaskIdentity

    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1, raising=False)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0, raising=False)


@pytest.fixture(scope="module")
def digits():
    data = load("digits")
    train, test = data.split(0.2, seed=0)
    return data, train, test


class FakeGrid:
    """Just enough of a Grid for a strategy's configure_train: the connected nodes."""

    def __init__(self, nodes):
        self.nodes = list(nodes)

    def get_node_ids(self):
        return self.nodes


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _replies(messages, model, data, *, epochs=1, lr=0.1):
    """Node n trains FedAvg epochs (batch 8) on its own 8 + n records and replies as a ClientApp would."""
    out = []
    for m in messages:
        nid = m.metadata.dst_node_id
        model.load_state_dict(m.content["arrays"].to_torch_state_dict())
        mine = data.subset(range(16 * nid, 16 * nid + 8 + nid))
        u = client_update(model, mine, local_epochs=epochs, batch_size=8, lr=lr)
        new = {k: v + u.payload[k] if k in u.payload else v for k, v in u.global_state.items()}
        content = RecordDict({"arrays": ArrayRecord(new), "metrics": MetricRecord({"num-examples": 8 + nid})})
        out.append((u, Message(content, reply_to=m)))
    return out


def _norm(payload):
    return math.sqrt(sum(float(v.double().pow(2).sum()) for v in payload.values()))


# --- the wrappers, driven by hand-made messages (no Ray) ----------------------------------------------------


def _one_record_round(model, data, aud, pairs):
    """Round 1: each (node, record) pair sends a FedSGD step on that one record; partition id = record index."""
    state = _state(model)
    cfg = {"lr": 0.1, "batch-size": 1, "local-epochs": 1, "mode": "fedsgd"}
    aud.begin_round(1, {nid: (state, cfg) for nid, _ in pairs})
    replies = []
    for nid, idx in pairs:
        u = client_update(model, data.subset([idx]), local_epochs=1, batch_size=1, lr=0.1)
        new = {k: v + u.payload[k] if k in u.payload else v for k, v in u.global_state.items()}
        replies.append(Reply(nid, new, {"num-examples": 1, "partition-id": idx}))
    aud.observe(1, replies)


def test_flower_views_on_disk_attacked_after_the_run_equal_a_thread_audit(digits, tmp_path, capsys):
    """attack_in='later' keeps only the views (safetensors) during the run; audit_saved_views (fedleak
    audit-flower) attacks them afterwards, scored against each partition: the analytic read-out of a one-record
    FedSGD step is the record (> 100 dB), and the worker-thread audit of the same replies finds the same."""
    from fedleak.flower.saved import audit_saved_views

    data, _, _ = digits
    model = build("mlp", data.spec, seed=0)
    pairs = [(7, 3), (8, 9)]
    later = Auditor.for_model(model, data.spec, attacks=["analytic"], attack_in="later", views_dir=tmp_path / "views")
    _one_record_round(model, data, later, pairs)
    assert later.findings == [] and len(later.view_files) == 2  # nothing attacked during the run
    res = audit_saved_views(tmp_path, attacks=["analytic"], records_of=lambda p: (data.inputs([p]), data.labels[[p]]))
    (sc,) = res.scenarios
    got = {e.clients[0]: e.targets[0] for e in sc.inversion}
    assert set(got) == {3, 9} and all(t.psnr > 100 and t.rebuilt for t in got.values())
    (r1,) = sc.training.rounds
    assert dict(zip(r1.node_ids, r1.clients, strict=True)) == dict(pairs)
    threaded = Auditor.for_model(model, data.spec, attacks=["analytic"], keep_views="memory")
    _one_record_round(model, data, threaded, pairs)
    found = {f.client: f.result.pixels for f in threaded.finish()}
    assert set(found) == {3, 9}
    for c in (3, 9):
        assert psnr(found[c].clamp(0, 1), data.pixels([c])).item() > 100
    assert (tmp_path / "report.html").read_text().count("data:image/png") == 2
    # the same from the command line, the records from the user's file
    from conftest import run_cli

    (tmp_path / "mine.py").write_text(
        "from fedleak.data import load\n_d = load('digits')\n"
        "def records(p):\n    return _d.inputs([p]), _d.labels[[p]]\n"
    )
    args = ["audit-flower", tmp_path, "--attack", "analytic", "--records-of", f"{tmp_path / 'mine.py'}:records"]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    assert "round 1, client 3: analytic: 1/1 rebuilt" in out and "rebuilt 2 of 2 client images" in out


def test_flower_run_folder_is_an_audit_that_fedleak_report_renders(digits, tmp_path, capsys):
    """write_flower_run writes the audit's schema (kind "audit", schema 2; it loads and round-trips): one
    inversion entry per round, client and attack. Round 1: two one-record FedSGD steps, the analytic read-out
    scored against each partition (exact: > 100 dB, rebuilt), a failing attack recorded as failed, a non-image
    result kept with what it returned. Round 2: identical replies (secure aggregation), one aggregate entry,
    pictured but scored against no client. ``fedleak report DIR`` renders it with the main report. Without the
    clients' records nothing is scored and the verdict says so."""
    from conftest import run_cli

    from fedleak.flower.runfolder import write_flower_run
    from fedleak.results import AuditResults, check_schema

    def broken(update):
        raise RuntimeError("boom")

    data, _, _ = digits
    model = build("mlp", data.spec, seed=0)
    pairs = [(7, 3), (8, 9)]
    attacks = ["analytic", ("broken", broken), ("norm", lambda u: _norm(u.payload))]

    def audited():
        aud = Auditor.for_model(model, data.spec, attacks=attacks, keep_views="memory", attack_in="inline")
        _one_record_round(model, data, aud, pairs)
        state = _state(model)
        aud.begin_round(2, {nid: (state, {"lr": 0.1, "mode": "fedsgd"}) for nid, _ in pairs})
        u = client_update(model, data.subset([3, 9]), local_epochs=1, batch_size=2, lr=0.1)
        summed = {k: v + u.payload[k] if k in u.payload else v for k, v in state.items()}
        aud.observe(2, [Reply(nid, summed, {"num-examples": 1}) for nid, _ in pairs])
        return aud

    def records_of(p):
        return data.inputs([p]), data.labels[[p]]

    out = tmp_path / "run"
    res = write_flower_run(out, audited(), accuracy={0: 0.1, 1: 0.5, 2: 0.6}, records_of=records_of, app={"x": 1})
    raw = json.loads((out / "results.json").read_text())
    assert raw["kind"] == "audit" and raw["schema_version"] == 2
    check_schema(raw)
    assert AuditResults.from_dict(raw) == res and res.to_dict() == raw
    (sc,) = res.scenarios
    assert sc.defense == "secagg"  # detected in round 2
    by = {(e.round, tuple(e.clients), e.attack): e for e in sc.inversion}
    assert len(by) == len(sc.inversion) == 3 * 2 + 3
    for c in (3, 9):
        exact = by[(1, (c,), "analytic")]
        (t,) = exact.targets
        assert t.psnr > 100 and t.rebuilt and t.client == c and t.label == int(data.labels[c])
        assert exact.summary.rebuilt == 1 and (out / exact.image).is_file()
        assert by[(1, (c,), "broken")].status == "failed" and by[(1, (c,), "broken")].note == "RuntimeError: boom"
        norm = by[(1, (c,), "norm")]
        assert norm.status == "done" and norm.targets == [] and "no reconstruction" in norm.note
    mixed = by[(2, (), "analytic")]
    assert mixed.realism.num_clients == 2 and mixed.targets == [] and "aggregate of 2" in mixed.note
    assert (out / mixed.image).is_file()
    rounds = {r.round: r for r in sc.training.rounds}
    assert rounds[1].clients == [3, 9] and rounds[1].node_ids == [7, 8] and rounds[1].seconds is not None
    assert rounds[2].clients == [] and rounds[2].node_ids == [7, 8]
    assert rounds[0].test_accuracy == 0.1 and sc.training.final_test_accuracy == 0.6
    assert res.config["app"] == {"x": 1} and res.setup.engine == "flower"
    assert "rebuilt 2 of 2 client images" in res.verdict[0]
    assert any("could not be scored" in v for v in res.verdict)  # the norm and the aggregate
    (out / "report.html").unlink()
    code, _, err = run_cli(["report", out], capsys)
    assert code == 0, err
    html = (out / "report.html").read_text()
    assert "Failed: RuntimeError: boom" in html and "3 ← node 7" in html and "aggregate of 2 nodes" in html
    assert html.count("data:image/png") >= 3  # two scored reconstructions and the aggregate's output

    bare = write_flower_run(tmp_path / "bare", audited())
    entries = bare.scenarios[0].inversion
    assert all(e.targets == [] and e.summary is None for e in entries)
    assert all("did not hand over" in e.note for e in entries if e.attack == "analytic" and e.clients)
    assert not any("rebuilt" in v for v in bare.verdict) and "could not be scored" in " ".join(bare.verdict)


def test_flower_wrapper_passes_everything_through_and_sees_each_client(digits, task_identity):
    data, train, _ = digits
    model = build("mlp", data.spec, seed=0)
    plain, wrapped = (
        FedAvg(),
        AuditingStrategy(FedAvg(), attacks=[("norm", lambda u: _norm(u.payload))], model=model, data_spec=data.spec),
    )
    arrays = ArrayRecord(model.state_dict())
    cfg = {"lr": 0.1, "batch-size": 8, "local-epochs": 1}
    sent_plain = list(plain.configure_train(1, arrays, ConfigRecord(dict(cfg)), FakeGrid([1, 2, 3])))
    sent = list(wrapped.configure_train(1, arrays, ConfigRecord(dict(cfg)), FakeGrid([1, 2, 3])))
    assert sorted(m.metadata.dst_node_id for m in sent) == sorted(m.metadata.dst_node_id for m in sent_plain)
    assert dict(sent[0].content["config"]) == dict(sent_plain[0].content["config"])
    pairs = _replies(sorted(sent, key=lambda m: m.metadata.dst_node_id), model, train)
    replies = [m for _, m in pairs]
    agg, _ = wrapped.aggregate_train(1, replies)
    ref, _ = plain.aggregate_train(1, replies)
    # the training is unchanged: same aggregate, and the replies are untouched
    for k, v in ref.to_torch_state_dict().items():
        assert torch.equal(agg.to_torch_state_dict()[k], v)
    assert wrapped.weighted_by_key == "num-examples"  # attributes read through to the wrapped strategy
    # one view per client, the payload is what it sent minus the global model; metadata from the wire
    assert wrapped.auditor.errors == []
    assert [v.client for v in wrapped.views] == [1, 2, 3]
    for (u, _), v in zip(pairs, wrapped.views, strict=True):
        assert v.kind == "delta" and v.num_clients == 1 and v.model == "mlp"
        assert all(torch.allclose(v.payload[k], u.payload[k], atol=1e-6) for k in u.payload)
        assert v.num_samples == 8 + v.client and v.local_lr == 0.1 and v.batch_size == 8
        assert v.local_steps == u.local_steps == 2  # E * ceil(n / B) from what the server sent and learnt
        assert v.labels is None  # labels never crossed the wire
    norms = [f.result for f in wrapped.findings]
    assert [f.attack for f in wrapped.findings] == ["norm"] * 3
    assert norms == pytest.approx([_norm(u.payload) for u, _ in pairs], rel=1e-5)


def test_flower_failing_attack_is_recorded_and_training_goes_on(digits, task_identity):
    data, train, _ = digits
    model = build("mlp", data.spec, seed=0)

    def broken(update):
        raise RuntimeError("boom")

    s = AuditingStrategy(FedAvg(), attacks=[broken], model=model, threat=ThreatModel.from_grants("none"))
    sent = s.configure_train(1, ArrayRecord(model.state_dict()), ConfigRecord({"lr": 0.1}), FakeGrid([1, 2]))
    agg, _ = s.aggregate_train(1, [m for _, m in _replies(sent, model, train)])
    assert agg is not None
    assert [f.error for f in s.findings] == ["RuntimeError: boom"] * 2
    assert all(v.num_samples is None and v.local_lr is None for v in s.views)  # the threat grants nothing
    with pytest.raises(FedleakInputError, match="give a name"):
        AuditingStrategy(FedAvg(), attacks=[42])


def test_flower_dp_wrapper_outer_audit_sees_raw_updates_inner_sees_clipped(digits, task_identity):
    """Server-side clipping happens on the server: wrapped outermost the audit sees each update as it arrived
    (what the server really holds); wrapped inside the DP wrapper it sees the clipped updates."""
    data, train, _ = digits
    model = build("mlp", data.spec, seed=0)
    clip = 0.05
    inner = AuditingStrategy(FedAvg(), attacks=[], model=model)
    outer = AuditingStrategy(DifferentialPrivacyServerSideFixedClipping(inner, 0.0, clip, 3), attacks=[], model=model)
    arrays, grid = ArrayRecord(model.state_dict()), FakeGrid([1, 2, 3])
    sent = outer.configure_train(1, arrays, ConfigRecord({"lr": 0.5}), grid)
    pairs = _replies(sorted(sent, key=lambda m: m.metadata.dst_node_id), model, train, epochs=2, lr=0.5)
    outer.aggregate_train(1, [m for _, m in pairs])
    raw = [_norm(u.payload) for u, _ in pairs]
    assert min(raw) > 2 * clip
    assert [_norm(v.payload) for v in outer.views] == pytest.approx(raw, rel=1e-5)
    assert all(_norm(v.payload) <= clip * (1 + 1e-4) for v in inner.views)
    assert outer.auditor.errors == inner.auditor.errors == []


def test_flower_legacy_secagg_results_become_one_aggregate_view(digits):
    """Flower's SecAgg+ workflow hands aggregate_fit K results that all carry the same unmasked sum: the audit
    forms one view of K clients and says so."""
    from flwr.common import Code, FitIns, FitRes, Status, ndarrays_to_parameters
    from flwr.server.strategy import FedAvg as LegacyFedAvg

    data, train, _ = digits
    model = build("mlp", data.spec, seed=0)
    names = list(model.state_dict())
    s = LegacyAuditingStrategy(LegacyFedAvg(), attacks=[], model=model, data_spec=data.spec)

    class Proxy:
        def __init__(self, nid):
            self.cid, self.node_id = str(nid), nid

    w0 = ndarrays_to_parameters([v.numpy() for v in model.state_dict().values()])
    cm_instr = [(Proxy(n), FitIns(w0, {"lr": 0.1, "batch-size": 8, "local-epochs": 1})) for n in (4, 5, 6)]
    s.inner.configure_fit = lambda rnd, params, cm: cm_instr
    s.configure_fit(1, w0, None)
    updates = [
        client_update(model, train.subset(range(8 * i, 8 * i + 8)), local_steps=1, batch_size=8) for i in range(3)
    ]
    agg = weighted_mean(updates)
    summed = ndarrays_to_parameters(
        [(v + agg[k]).numpy() if k in agg else v.numpy() for k, v in model.state_dict().items()]
    )
    ok = Status(Code.OK, "")
    results = [(Proxy(n), FitRes(ok, summed, 8, {})) for n in (4, 5, 6)]  # one object, as SecAgg+ does
    params, _ = s.aggregate_fit(1, results, [])
    assert params is not None and s.auditor.errors == []
    (view,) = s.views
    assert view.client is None and view.num_clients == 3 and view.num_samples == 24
    assert view.local_steps is None  # per-client steps are not a property of a sum
    assert all(torch.allclose(view.payload[k], agg[k], atol=1e-6) for k in agg)
    assert s.auditor.summary()["secure_aggregation"] is True
    assert names == s.auditor.state_names


def test_flower_package_imports_without_flower_and_says_what_to_install():
    """Flower is an optional extra: ``import fedleak.flower`` works without it, and the names that need it
    fail with one line saying what to install."""
    import subprocess

    code = (
        "import sys; sys.modules['flwr'] = None\n"
        "import fedleak.flower as f\n"
        "from fedleak.errors import FedleakInputError\n"
        "try:\n    f.AuditingStrategy\nexcept FedleakInputError as e:\n    print('ERR', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-500:]
    assert "ERR" in out.stdout and "pip install 'fedleak[flower]'" in out.stdout


def test_flower_fedleak_aggregator_step_equals_the_local_engine_server_step(digits):
    """With a fedleak aggregator (e.g. client-level DP) the Flower server applies the same rule as
    Federation.apply to the same updates, in client order, with the same seeded generator."""
    from fedleak.flower.auditor import Reply
    from fedleak.flower.federation import fedleak_aggregate

    data, train, test = digits
    cfg = FedConfig(clients=3, rounds=1, seed=4, batch_size=16)
    fed = Federation(build("mlp", data.spec, seed=0), train, test, cfg)
    w0 = _state(fed.model)
    noise = []

    def noisy_mean(updates, g):  # an aggregator that uses its generator, as client-level DP does
        agg = weighted_mean(updates)
        z = {k: torch.randn(v.shape, generator=g) * 1e-3 for k, v in agg.items()}
        noise.append([u.client for u in updates])
        return {k: agg[k] + z[k] for k in agg}

    fed.aggregator = noisy_mean
    (r,) = list(fed.run())
    replies = []
    for u in reversed(r.updates):  # Flower's replies arrive in any order
        arrays = {k: w0[k] + u.payload[k] if k in u.payload else w0[k] for k in w0}
        reply = Reply(node_id=100 + u.client, arrays=arrays, metrics={"num-examples": u.num_samples})
        replies.append((u.client, reply))
    names = [n for n, _ in fed.model.named_parameters()]
    new = fedleak_aggregate(noisy_mean, w0, replies, {"lr": cfg.lr}, 1, cfg, names)
    assert noise == [[0, 1, 2], [0, 1, 2]]
    for k, v in fed.model.state_dict().items():
        assert torch.allclose(new[k], v, atol=1e-6)


# --- Flower's simulation engine (Ray) -----------------------------------------------------------------------


def _best_psnr(recon_pixels, candidates):
    """PSNR of one reconstruction against its closest candidate image."""
    return float(psnr(recon_pixels.expand(len(candidates), *candidates.shape[1:]), candidates).max())


def test_flower_ray_fedsgd_update_gives_the_image_back_and_accuracy_matches_local(digits, ray_session):
    """3 clients, 2 rounds of FedSGD (one image each) as Flower ClientApps on the simulation engine, the
    server wrapped by the auditing strategy: the analytic attack rebuilds each client's image from the update
    the server received, and the federation is the local engine's one (same clients, updates, accuracy)."""
    from fedleak.flower import RayOptions, run_flower_federation

    data, train, test = digits
    cfg = FedConfig(clients=3, rounds=2, mode="fedsgd", batch_size=1, seed=0)
    run = run_flower_federation(
        build("mlp", data.spec, seed=0),
        train,
        test,
        cfg,
        attacks=["analytic"],
        ray=RayOptions(num_cpus=RAY_CPUS, client_cpus=RAY_CPUS),
    )
    local = Federation(build("mlp", data.spec, seed=0), train, test, cfg)
    rounds = list(local.run())
    assert run.auditor.errors == [] and [r.round for r in run.rounds] == [1, 2]
    assert ray_session.is_initialized()  # the caller's Ray session outlives the run, for the next one
    for fr, lr in zip(run.rounds, rounds, strict=True):
        assert fr.sampled == lr.sampled
        assert abs(fr.test_accuracy - lr.test_accuracy) <= 0.01
        for fu, lu in zip(fr.updates, lr.updates, strict=True):
            assert (fu.client, fu.kind, fu.num_samples) == (lu.client, "gradient", 1)
            assert all(torch.allclose(fu.payload[k], lu.payload[k], atol=1e-5) for k in lu.payload)
    final = {k: v for k, v in run.model.state_dict().items()}
    assert all(torch.allclose(final[k], v, atol=1e-5) for k, v in local.model.state_dict().items())
    found = [f for f in run.findings if f.attack == "analytic"]
    assert len(found) == 6 and all(f.error is None and f.seen == "client" for f in found)
    for f in found:
        mine = train.subset(local.parts[f.client]).pixels()
        assert _best_psnr(f.result.pixels, mine) > 40.0
    print(f"flower vs local final accuracy: {run.final_accuracy:.4f} vs {rounds[-1].test_accuracy:.4f}")


def test_flower_ray_secagg_server_sees_only_the_aggregate(digits, ray_session):
    """The same FedSGD federation under Flower's SecAgg+ (legacy workflow, secaggplus_mod on the clients):
    every view the server gets is the aggregate of 3 clients, equal to the weighted mean of their updates
    (up to SecAgg's quantisation), and the analytic attack on it recovers none of the clients' images."""
    from fedleak.flower import RayOptions, run_flower_federation

    data, train, test = digits
    cfg = FedConfig(clients=3, rounds=2, mode="fedsgd", batch_size=1, seed=0)
    run = run_flower_federation(
        build("mlp", data.spec, seed=0),
        train,
        test,
        cfg,
        attacks=["analytic"],
        secagg=True,
        ray=RayOptions(num_cpus=RAY_CPUS, client_cpus=RAY_CPUS),
    )
    local = Federation(build("mlp", data.spec, seed=0), train, test, cfg)
    rounds = list(local.run())
    assert run.auditor.errors == [] and run.auditor.summary()["secure_aggregation"] is True
    for fr, lr in zip(run.rounds, rounds, strict=True):
        (view,) = fr.updates  # one view per round, not one per client
        assert view.client is None and view.num_clients == 3 and view.num_samples == 3
        agg = weighted_mean(lr.updates)
        gap = max(float((view.payload[k] - agg[k]).abs().max()) for k in agg)
        assert gap < 1e-4
        for u in lr.updates:  # no single client's update was seen
            assert max(float((view.payload[k] - u.payload[k]).abs().max()) for k in agg) > 100 * gap
        assert abs(fr.test_accuracy - lr.test_accuracy) <= 0.01
    found = [f for f in run.findings if f.attack == "analytic"]
    assert len(found) == 2 and all(f.error is None and f.seen == "aggregate" for f in found)
    everyone = torch.cat([train.subset(p).pixels() for p in local.parts])
    for f in found:
        assert _best_psnr(f.result.pixels, everyone) < 25.0  # a mixture (about 15 dB), no client's image


def test_flower_ray_reference_models_give_the_same_auc_as_in_process(digits, ray_session):
    """LiRA with 8 reference models trained as 2 Ray tasks (the vectorised trainer inside each) gives the same
    scores and AUC as with the in-process trainer, for the same seed."""
    from sklearn.metrics import roc_auc_score

    from fedleak.attacks.membership import balanced_masks, membership_scores, train_references
    from fedleak.attacks.membership.context import Records
    from fedleak.fl import SGDTrainer, TrainSpec
    from fedleak.flower import train_references_on_ray

    data, _, _ = digits
    spec = TrainSpec(epochs=10, batch_size=32, lr=0.1)
    members = data.subset(range(150))
    target = build("mlp", data.spec, seed=0)
    SGDTrainer().train(target, *members.tensors(), spec, torch.Generator().manual_seed(0))
    records = Records.of(data.subset(range(300)))
    masks = balanced_masks(8, len(records), seed=3)
    x, y = records.x, records.y
    local = train_references("mlp", data.spec, x, y, masks, spec, seed=3, pool_ids=records.ids)
    remote = train_references_on_ray("mlp", data.spec, x, y, masks, spec, seed=3, chunks=2, pool_ids=records.ids)
    assert remote.count == 8 and torch.equal(remote.masks, local.masks)
    for k, v in local.params.items():
        assert torch.allclose(remote.params[k], v, atol=1e-5)
    is_member = np.array([True] * 150 + [False] * 150)
    s_local = membership_scores(target, records, "lira", references=local, seed=3)
    s_ray = membership_scores(target, records, "lira", references=remote, seed=3)
    auc_local, auc_ray = roc_auc_score(is_member, s_local.numpy()), roc_auc_score(is_member, s_ray.numpy())
    assert auc_local > 0.55  # the attack works at all
    assert auc_ray == pytest.approx(auc_local, abs=1e-3)
    print(f"LiRA AUC in-process {auc_local:.4f}, on Ray {auc_ray:.4f}")


def test_flower_ray_example_app_audits_an_unchanged_user_clientapp(ray_session, tmp_path, monkeypatch):
    """examples/flower_app: the user's ClientApp (plain torch, its own nn.Module, no fedleak) under Flower's FedAvg
    wrapped by the auditing strategy. Each round the server sees each partition's own update (node ids mapped to
    partitions), the FedAvg replay runs on every one of them and is scored against that partition's records; the
    views are on disk; training goes on as usual."""
    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    from fedleak.flower.viewstore import load_view

    monkeypatch.syspath_prepend(str(EXAMPLE))
    from flower_app import server_app
    from flower_app.client_app import app as client_app

    out = tmp_path / "run"
    server = ServerApp()

    @server.main()
    def main(grid, context):
        context.run_config.update({"num-server-rounds": 2, "audit-out": str(out), "num-partitions": 3})
        server_app.main(grid, context)

    run_simulation(
        server_app=server,
        client_app=client_app,
        num_supernodes=3,
        backend_config={"client_resources": {"num_cpus": RAY_CPUS, "num_gpus": 0.0}},
    )
    res = json.loads((out / "results.json").read_text())
    assert res["kind"] == "audit" and res["schema_version"] == 2 and res["setup"]["engine"] == "flower"
    (sc,) = res["scenarios"]
    rounds = {r["round"]: r for r in sc["training"]["rounds"]}
    for rnd in (1, 2):
        assert sorted(rounds[rnd]["clients"]) == [0, 1, 2]
        assert len(set(rounds[rnd]["node_ids"])) == 3 and rounds[rnd]["seconds"] > 0
    assert rounds[2]["test_accuracy"] > rounds[0]["test_accuracy"]  # the wrapped server still trains the model
    inv = sc["inversion"]
    assert sorted((e["round"], e["clients"]) for e in inv) == [(r, [c]) for r in (1, 2) for c in range(3)]
    for e in inv:
        assert e["update"] == "sent" and e["attack"] == "fedavg" and e["status"] == "done"
        assert len(e["targets"]) == 32 and e["realism"]["received"] == "delta" and e["realism"]["local_epochs"] == 1
        t = e["targets"][0]
        assert {"index", "psnr", "ssim", "baseline_psnr", "rebuilt"} <= set(t)
        assert all(math.isfinite(t["psnr"]) for t in e["targets"])
        assert e["summary"]["rebuilt"] == sum(t["rebuilt"] for t in e["targets"])
        assert (out / e["image"]).stat().st_size > 0
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= len(inv)  # each entry's picture (and the accuracy plot)
    views = sorted((out / "views").glob("*.safetensors"))
    assert len(views) == 6
    v = load_view(views[0])
    assert v.kind == "delta" and v.num_samples == 32 and v.round in (1, 2)
