"""A guard on the client: a Flower client mod that, before a training reply leaves the client, checks the global
model it received for malicious-server constructions and its own update for exact exposure (the detectors of
:mod:`fedleak.flower.leakage`), puts what it found into the reply's metrics, and acts by its policy:

- ``warn`` (the default ``leakage_guard``): send as is, log one warning line per finding;
- ``clip``: send, but with every flagged layer as received (that layer's update cut to zero, so it reads out
  nothing);
- ``refuse``: send no update at all (an error reply; the server's strategy counts it as a failure).

    from flwr.clientapp import ClientApp
    from fedleak.flower import leakage_guard, LeakageGuard

    app = ClientApp(mods=[leakage_guard])                 # warn
    app = ClientApp(mods=[LeakageGuard("refuse")])        # block a leaking update

The reply carries ``MetricRecord`` ``"fedleak-guard"`` (``constructions``, ``exact_exposures``, ``withheld``,
``refused``: counts) and ``ConfigRecord`` ``"fedleak-guard-findings"`` (``policy``, ``findings``: one line each).
"""

from __future__ import annotations

import logging

from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MessageType, MetricRecord, RecordDict

from fedleak.flower.leakage import POLICIES, GuardVerdict, apply_verdict, guard_decision

log = logging.getLogger("fedleak.flower.guard")

RECORD = "fedleak-guard"  # the MetricRecord of counts
FINDINGS = "fedleak-guard-findings"  # the ConfigRecord of lines (a RecordDict's keys are shared by all types)
REFUSED_CODE = 4501  # the error code of a refused reply


def _arrays(content: RecordDict, preferred: str = "arrays") -> tuple[str, ArrayRecord] | None:
    records = content.array_records
    if preferred in records:
        return preferred, records[preferred]
    if len(records) == 1:
        return next(iter(records.items()))
    return None


def _record_findings(content: RecordDict, verdict: GuardVerdict) -> None:
    content.metric_records[RECORD] = MetricRecord(
        {
            "constructions": len(verdict.constructions),
            "exact_exposures": sum(e.exact for e in verdict.exposures),
            "withheld": len(verdict.withheld),
            "refused": int(verdict.action == "refuse"),
        }
    )
    content.config_records[FINDINGS] = ConfigRecord({"policy": verdict.policy, "findings": verdict.lines() or [""]})


class LeakageGuard:
    """The client mod, with its ``policy`` ("warn", "clip" or "refuse")."""

    def __init__(self, policy: str = "warn") -> None:
        if policy not in POLICIES:
            from fedleak.errors import FedleakInputError

            raise FedleakInputError(f"leakage guard policy {policy!r}: choose one of {', '.join(POLICIES)}")
        self.policy = policy
        self.last: GuardVerdict | None = None  # the latest verdict (for the app's own logging)

    def __repr__(self) -> str:
        return f"LeakageGuard({self.policy!r})"

    def __call__(self, msg: Message, ctxt: Context, call_next) -> Message:  # noqa: ANN001
        if msg.metadata.message_type != MessageType.TRAIN:
            return call_next(msg, ctxt)
        got = _arrays(msg.content)
        received = got[1].to_torch_state_dict() if got is not None else None
        reply = call_next(msg, ctxt)
        if received is None or reply.has_error():
            return reply
        out = _arrays(reply.content, got[0])
        if out is None:
            return reply
        key, record = out
        sent = record.to_torch_state_dict()
        verdict = guard_decision(received, sent, self.policy)
        self.last = verdict
        for line in verdict.lines():
            log.warning("fedleak leakage guard (%s): %s", self.policy, line)
        if verdict.action == "refuse":
            why = "; ".join(verdict.lines())
            return Message(
                Error(code=REFUSED_CODE, reason=f"fedleak leakage guard refused the update: {why}"), reply_to=msg
            )
        if verdict.action == "withhold":
            reply.content.array_records[key] = ArrayRecord(apply_verdict(received, sent, verdict))
        _record_findings(reply.content, verdict)
        return reply


leakage_guard = LeakageGuard("warn")
