"""What both strategy wrappers (Message API and legacy) share: holding the user's strategy and the auditor,
forwarding unknown attributes to the wrapped strategy, and exposing the findings."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from fedleak.data.dataset import DataSpec
from fedleak.fl.update import ClientUpdate, ThreatModel
from fedleak.flower.auditor import AttackLike, AttackWhen, Auditor, Finding, KeepViews
from fedleak.flower.views import PayloadHow, WireKeys


class AuditingWrapper:
    """Mixin: ``inner`` is the user's strategy, ``auditor`` turns replies into views and runs the attacks."""

    def __init__(
        self,
        inner: Any,
        attacks: Iterable[AttackLike] | Mapping[str, Any] | None = ("auto",),
        record: bool = True,
        *,
        model: nn.Module | str | None = None,
        data_spec: DataSpec | None = None,
        threat: ThreatModel | None = None,
        payload: PayloadHow = "auto",
        keys: WireKeys = WireKeys(),
        select: Any = None,
        secure_aggregation: bool | None = None,
        client_ids: Mapping[int, int] | None = None,
        auditor: Auditor | None = None,
        keep_views: KeepViews = "disk",
        views_dir: str | Path | None = None,
        attack_in: AttackWhen = "thread",
    ) -> None:
        self.inner = inner
        self.auditor = auditor or Auditor.for_model(
            model,
            data_spec,
            attacks=attacks,
            record=record,
            select=select,
            threat=threat,
            payload=payload,
            keys=keys,
            secure_aggregation=secure_aggregation,
            client_ids=client_ids,
            keep_views=keep_views,
            views_dir=views_dir,
            attack_in=attack_in,
        )

    def __getattr__(self, name: str) -> Any:
        inner = self.__dict__.get("inner")
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"

    @property
    def findings(self) -> list[Finding]:
        """Every finding so far, once the attacks still running on the worker thread are done."""
        return self.auditor.finish()

    @property
    def views(self) -> list[ClientUpdate]:
        return self.auditor.views
