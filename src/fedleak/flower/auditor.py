"""The curious server's notebook: it turns each round's replies into :class:`~fedleak.fl.ClientUpdate` views,
runs the configured attacks on them and keeps :class:`Finding` records. Framework-free: the Flower strategy
wrappers (:mod:`fedleak.flower.strategy`, :mod:`fedleak.flower.legacy`) feed it plain dicts of tensors.

An attack is a value: a name for :func:`fedleak.attacks.invert` (``"analytic"``, ``"idlg"``, ...), a
``(name, options)`` pair, or any callable ``ClientUpdate -> result``.

    >>> import torch
    >>> aud = Auditor(model="mlp", names=["w"], attacks=[("norm", lambda u: float(u.payload["w"].norm()))])
    >>> sent = {"w": torch.zeros(2)}
    >>> aud.begin_round(1, {7: (sent, {"lr": 0.5})})
    >>> reply = Reply(node_id=7, arrays={"w": torch.tensor([3.0, 4.0])}, metrics={"num-examples": 2})
    >>> _ = aud.observe(1, [reply])
    >>> [(f.round, f.client, f.attack, f.result) for f in aud.findings]
    [(1, 7, 'norm', 5.0)]
"""

from __future__ import annotations

import logging
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from torch import Tensor, nn

from fedleak.data.dataset import DataSpec
from fedleak.errors import FedleakInputError
from fedleak.fl.update import ClientUpdate, ThreatModel
from fedleak.flower.views import PayloadHow, WireKeys, build_update, resolve_how, same_arrays
from fedleak.flower.viewstore import load_view, save_view

log = logging.getLogger("fedleak.flower")

AttackFn = Callable[[ClientUpdate], Any]
AttackLike = str | tuple[str, Mapping[str, Any]] | tuple[str, AttackFn] | AttackFn
KeepViews = Literal["disk", "memory"]
AttackWhen = Literal["thread", "inline", "later"]


@dataclass
class Finding:
    """One attack on one view: which round, whose update (``client`` None and ``num_clients`` > 1 when the
    server saw only an aggregate), the attack's result (e.g. a ``Reconstruction``) or the error it raised."""

    round: int
    client: int | None
    node_id: int | None
    num_clients: int
    attack: str
    result: Any = None
    error: str | None = None
    seconds: float = 0.0
    facts: dict[str, Any] = field(default_factory=dict)  # what the view held: kind, num_samples, local_steps, ...

    @property
    def seen(self) -> str:
        return "aggregate" if self.num_clients > 1 or self.client is None else "client"


@dataclass
class Reply:
    """One client's reply as the wrapper hands it over: its node, arrays, metrics, and extra fields."""

    node_id: int | None
    arrays: dict[str, Tensor]
    metrics: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)


def _invert(name: str, options: Mapping[str, Any]) -> AttackFn:
    def run(update: ClientUpdate) -> Any:
        from fedleak.attacks import invert  # lazy: flower stands above the attacks, which may be absent

        return invert(update, attack=name, **dict(options))

    run.__name__ = name
    return run


def _epochs(config: Mapping[str, Any], keys: WireKeys) -> int | None:
    """The local epochs the server's train config asked for, when it says."""
    v = config.get(keys.local_epochs)
    return int(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


AUTO = "auto"  # the inversion attacks that fit each view (exact ones first, then a replay or gradient match)


def _auto(options: Mapping[str, Any]) -> AttackFn:
    def run(update: ClientUpdate) -> Any:
        from fedleak.attacks import invert
        from fedleak.attacks.inversion import auto_attacks

        names = auto_attacks(update)
        if not names:
            raise FedleakInputError("no inversion attack fits this update (see fedleak.attacks.inversion.applicable)")
        return {name: invert(update, attack=name, **dict(options)) for name in names}

    run.__name__ = AUTO
    return run


def resolve_attacks(attacks: Iterable[AttackLike] | Mapping[str, Any] | None) -> list[tuple[str, AttackFn]]:
    """Normalise the ``attacks=`` argument into (name, callable) pairs."""
    if attacks is None:
        return []
    if isinstance(attacks, str) or callable(attacks):
        attacks = [attacks]
    if isinstance(attacks, Mapping):
        attacks = list(attacks.items())
    out: list[tuple[str, AttackFn]] = []
    for a in attacks:
        if a == AUTO or (isinstance(a, tuple) and len(a) == 2 and a[0] == AUTO):
            out.append((AUTO, _auto(dict(a[1]) if isinstance(a, tuple) else {})))
        elif isinstance(a, str):
            out.append((a, _invert(a, {})))
        elif isinstance(a, tuple) and len(a) == 2 and isinstance(a[0], str):
            name, what = a
            out.append((name, what if callable(what) else _invert(name, what or {})))
        elif callable(a):
            out.append((getattr(a, "__name__", type(a).__name__), a))
        else:
            raise FedleakInputError(
                f"attack {a!r}: give a name for fedleak.attacks.invert ('analytic', 'idlg', ...), a (name, "
                f"options) "
                "pair, or a callable taking a ClientUpdate"
            )
    return out


class Auditor:
    """Views, attacks and findings for a strategy wrapper; the strategy itself stays untouched.

    ``model``: the architecture spec the clients train (``ClientUpdate.model``); ``names``: its trainable
    parameter names (the payload); ``state_names``: all state names in order (for Flower's legacy unnamed
    arrays). ``record``: keep every view in :attr:`views` (memory grows with rounds x clients). ``select``:
    which views to attack (default all). ``secure_aggregation``: None detects it (identical arrays in every
    reply), True/False asserts it. ``client_ids``: node id -> client index, when the server knows it.
    ``keep_views``: "disk" (default) writes each view to ``views_dir`` as safetensors (a temporary folder when
    None) and reads it back on demand; "memory" keeps the tensors in :attr:`views`. ``attack_in``: "thread"
    (default) runs the attacks on one worker thread, off the round's critical path (call :meth:`finish` before
    reading the findings); "inline" runs them inside ``aggregate_train``; "later" runs none during the run (the
    views stay on disk for ``fedleak audit-flower``). :attr:`timing` holds, per round, the seconds the audit
    added to the round's critical path and the round's own wall time (``configure_train`` to the replies seen).
    """

    def __init__(
        self,
        *,
        model: str = "unknown",
        names: Sequence[str] | None = None,
        state_names: Sequence[str] | None = None,
        attacks: Iterable[AttackLike] | Mapping[str, Any] | None = None,
        record: bool = True,
        select: Callable[[ClientUpdate], bool] | None = None,
        threat: ThreatModel | None = None,
        payload: PayloadHow = "auto",
        keys: WireKeys = WireKeys(),
        data_spec: DataSpec | None = None,
        secure_aggregation: bool | None = None,
        client_ids: Mapping[int, int] | None = None,
        keep_views: KeepViews = "disk",
        views_dir: str | Path | None = None,
        attack_in: AttackWhen = "thread",
    ) -> None:
        resolve_how(payload, {})  # validate early
        if keep_views not in ("disk", "memory"):
            raise FedleakInputError(f"keep_views={keep_views!r}: choose 'disk' or 'memory'")
        if attack_in not in ("thread", "inline", "later"):
            raise FedleakInputError(f"attack_in={attack_in!r}: choose 'thread', 'inline' or 'later'")
        if attack_in == "later" and (not record or keep_views != "disk"):
            raise FedleakInputError("attack_in='later' attacks the saved views: keep record=True, keep_views='disk'")
        self.keep_views, self.attack_in = keep_views, attack_in
        self.views_dir = Path(views_dir) if views_dir is not None else None
        self.view_files: list[Path] = []
        self._memory_views: list[ClientUpdate] = []
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []
        self.timing: dict[int, dict[str, float]] = {}
        self._round_start: dict[int, float] = {}
        self.model, self.names = model, list(names or [])
        self.state_names = list(state_names) if state_names is not None else None
        self.attacks = resolve_attacks(attacks)
        self.record, self.select = record, select
        self.threat, self.payload, self.keys, self.data_spec = (
            threat or ThreatModel(),
            payload,
            keys,
            data_spec,
        )
        self.secure_aggregation = secure_aggregation
        self.client_ids: dict[int, int] = dict(client_ids or {})
        self.sent: dict[int, dict[int | None, tuple[dict[str, Tensor], dict[str, Any]]]] = {}
        self.findings: list[Finding] = []
        self.errors: list[str] = []  # what kept the audit (not the training) from seeing a round
        self.seen: dict[int, dict[str, Any]] = {}  # per round: what the server saw (clients or an aggregate)

    @classmethod
    def for_model(cls, model: nn.Module | str | None, data_spec: DataSpec | None = None, **options: Any) -> Auditor:
        """An auditor that knows the clients' architecture: a torch module (a fedleak model names its spec),
        or a fedleak spec such as ``"mlp"`` with ``data_spec``; None takes every floating array of a reply as
        a parameter."""
        if model is None:
            return cls(data_spec=data_spec, **options)
        if isinstance(model, str):
            if data_spec is None:
                raise FedleakInputError(
                    f"model {model!r} given by name needs data_spec=... (the record shape and classes) to "
                    f"rebuild it; "
                    "or pass the torch module itself"
                )
            from fedleak.models import build

            model = build(model, data_spec, seed=0)
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        from fedleak.models.user import live_spec

        spec = live_spec(model)
        return cls(model=spec, names=names, state_names=list(model.state_dict()), data_spec=data_spec, **options)

    def begin_round(self, rnd: int, sent: Mapping[int | None, tuple[dict[str, Tensor], Mapping[str, Any]]]) -> None:
        """Remember what the server sent each node this round: (global state, train config)."""
        self._round_start[rnd] = time.perf_counter()
        self.sent[rnd] = {nid: (state, dict(cfg)) for nid, (state, cfg) in sent.items()}

    def _sent_for(self, rnd: int, node_id: int | None) -> tuple[dict[str, Tensor], dict[str, Any]]:
        sent = self.sent.get(rnd, {})
        if node_id in sent:
            return sent[node_id]
        if sent:  # e.g. a reply from an unknown node: the same global model went to all
            return next(iter(sent.values()))
        raise FedleakInputError(
            f"round {rnd}: a reply arrived but the auditing strategy never saw what was sent; wrap the "
            f"strategy "
            "that configures training (configure_train / configure_fit), not only its aggregation"
        )

    def client_of(self, reply: Reply) -> int | None:
        key = self.keys.client
        if isinstance(reply.metrics.get(key), int | float):
            return int(reply.metrics[key])
        if reply.node_id is not None:
            return self.client_ids.get(reply.node_id, reply.node_id)
        return None

    def observe(self, rnd: int, replies: Sequence[Reply]) -> list[ClientUpdate]:
        """Build the views of this round's replies, attack them, store findings; never raises for an
        attack."""
        t0 = time.perf_counter()
        replies = [r for r in replies if r.arrays]
        if not replies:
            return []
        aggregated = self.secure_aggregation
        if aggregated is None:
            aggregated = same_arrays([r.arrays for r in replies])
        if aggregated:
            views = [self._aggregate_view(rnd, replies)]
            log.warning(
                "fedleak audit, round %d: the server saw only the aggregate of %d clients (secure "
                "aggregation); "
                "attacking the aggregate",
                rnd,
                len(replies),
            )
        else:
            views = [self._client_view(rnd, r) for r in replies]
        self.seen[rnd] = {
            "secure_aggregation": bool(aggregated),
            "num_clients": len(replies),
            "clients": [None] if aggregated else [v.client for v in views],
            "node_ids": [r.node_id for r in replies],
        }
        for v in views:
            if self.record:
                self._keep(v)
            if self.attack_in != "later" and (self.select is None or self.select(v)):
                if self.attack_in == "inline":
                    self._attack(v)
                else:
                    if self._pool is None:
                        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fedleak-audit")
                    self._pending.append(self._pool.submit(self._attack, v))
        t1 = time.perf_counter()
        self.timing[rnd] = {
            "audit_seconds_on_path": t1 - t0,
            "round_seconds": t1 - self._round_start.get(rnd, t0),
        }
        return views

    # ---- the views the server kept -------------------------------------------------------------------------

    def _keep(self, view: ClientUpdate) -> None:
        if self.keep_views == "memory":
            self._memory_views.append(view)
            return
        if self.views_dir is None:
            self.views_dir = Path(tempfile.mkdtemp(prefix="fedleak-views-"))
        who = "agg" if view.client is None else f"c{view.client}"
        path = self.views_dir / f"view_r{view.round}_{who}_{len(self.view_files)}.safetensors"
        self.view_files.append(save_view(view, path))

    @property
    def views(self) -> list[ClientUpdate]:
        """Every view kept (read back from disk when they went there)."""
        if self.keep_views == "memory":
            return list(self._memory_views)
        return [load_view(p) for p in self.view_files]

    def finish(self) -> list[Finding]:
        """Wait for the attacks still running on the worker thread; returns the findings."""
        for f in self._pending:
            f.result()
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        return self.findings

    def attack_saved(self, views: Iterable[ClientUpdate] | None = None) -> list[Finding]:
        """Run the attacks now on ``views`` (default: the views kept on disk), in this thread."""
        for v in self.views if views is None else views:
            if self.select is None or self.select(v):
                self._attack(v)
        return self.findings

    def _names(self, arrays: Mapping[str, Tensor]) -> list[str]:
        return self.names or [k for k, v in arrays.items() if v.is_floating_point()]

    def _client_view(self, rnd: int, r: Reply) -> ClientUpdate:
        sent, cfg = self._sent_for(rnd, r.node_id)
        return build_update(
            sent,
            r.arrays,
            names=self._names(r.arrays),
            model=self.model,
            how=self.payload,
            config=cfg,
            metrics=r.metrics,
            keys=self.keys,
            threat=self.threat,
            data_spec=self.data_spec,
            round=rnd,
            client=self.client_of(r),
            labels=r.extras.get("labels"),
            extras={"node_id": r.node_id, "local_epochs": _epochs(cfg, self.keys)},
            share_global=True,
        )

    def _aggregate_view(self, rnd: int, replies: Sequence[Reply]) -> ClientUpdate:
        sent, cfg = self._sent_for(rnd, replies[0].node_id)
        nums = [r.metrics.get(self.keys.num_examples) for r in replies]
        metrics = dict(replies[0].metrics)
        if all(isinstance(n, int | float) for n in nums):
            metrics[self.keys.num_examples] = sum(nums)  # per-client counts travel in the clear
        else:
            metrics.pop(self.keys.num_examples, None)
        metrics.pop(self.keys.local_steps, None)
        return build_update(
            sent,
            replies[0].arrays,
            names=self._names(replies[0].arrays),
            model=self.model,
            how=self.payload,
            config=cfg,
            metrics=metrics,
            keys=self.keys,
            threat=self.threat,
            data_spec=self.data_spec,
            round=rnd,
            client=None,
            num_clients=len(replies),
            extras={
                "node_ids": [r.node_id for r in replies],
                "secure_aggregation": True,
                "local_epochs": _epochs(cfg, self.keys),
            },
            share_global=True,
        )

    def _attack(self, view: ClientUpdate) -> None:
        for name, fn in self.attacks:
            t0 = time.perf_counter()
            result, error = None, None
            try:
                result = fn(view)
            except Exception as e:  # an audit must never break the training it watches
                error = f"{type(e).__name__}: {e}"
                log.warning("fedleak audit: attack %r failed on round %s: %s", name, view.round, error)
                log.debug(traceback.format_exc())
            results = result.items() if name == AUTO and isinstance(result, dict) else [(name, result)]
            seconds = (time.perf_counter() - t0) / max(1, len(results))
            facts = {k: getattr(view, k) for k in ("kind", "num_samples", "local_steps", "local_lr", "batch_size")}
            facts["train_mode"] = view.train_mode
            facts["local_epochs"] = view.extras.get("local_epochs")  # from the train config the server sent
            facts["batchnorm"] = any(k.endswith("running_mean") for k in view.global_state)
            for attack_name, res in results:
                self.findings.append(
                    Finding(
                        round=view.round or 0,
                        client=view.client,
                        node_id=view.extras.get("node_id"),
                        num_clients=view.num_clients,
                        attack=attack_name,
                        result=res,
                        error=error,
                        seconds=seconds,
                        facts=facts,
                    )
                )

    def summary(self) -> dict[str, Any]:
        """Plain facts for a report: rounds audited, whether each saw clients or only an aggregate,
        findings."""
        return {
            "rounds": {str(k): v for k, v in sorted(self.seen.items())},
            "secure_aggregation": any(v["secure_aggregation"] for v in self.seen.values()),
            "views": sum(1 if v["secure_aggregation"] else v["num_clients"] for v in self.seen.values()),
            "findings": len(self.findings),
            "errors": sum(f.error is not None for f in self.findings) + len(self.errors),
        }
