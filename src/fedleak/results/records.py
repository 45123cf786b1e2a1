"""The records of an audit's ``results.json`` (schema version :data:`SCHEMA_VERSION`).

The keys that tools and checks read (DESIGN.md and the issues) are fields here and are never renamed:
inversion entries carry ``update`` ("sent": the update the client really sent; "probe": a gradient the audit
computed itself, which an honest server cannot obtain), each target ``psnr``, ``ssim``, ``baseline_psnr`` and
``rebuilt``; membership attacks ``auc``, ``auc_ci``, ``tpr_at_fpr`` (null where not resolvable),
``tpr_at_fpr_ci`` and ``counts``; each membership part the ``federation`` of the model it attacked.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Literal

from fedleak.errors import FedleakInputError
from fedleak.results.serial import Record

SCHEMA_VERSION = 2


@dataclass
class FederationInfo(Record):
    """One federation the audit trained: what a figure measured on it speaks of."""

    name: str  # how sentences name it, e.g. "the lfw-faces federation"
    dataset: str
    model: str
    clients: int
    rounds: int
    mode: str  # fedavg | fedsgd
    local_epochs: int | None  # None: not known to the server (e.g. a Flower app's train config does not say)
    batch_size: int | None
    lr: float | None
    partition: str = "iid"
    test_accuracy: float | None = None  # of the final global model (filled once trained)


@dataclass
class RoundRecord(Record):
    round: int
    test_accuracy: float | None  # None: the run did not evaluate this round (e.g. a Flower app without evaluate_fn)
    test_loss: float | None = None
    clients: list[int] = field(default_factory=list)
    # a Flower run: the node each client replied from (parallel to ``clients``; all of them when the server saw
    # only an aggregate, and ``clients`` is then empty), the round's wall time and the audit's share of it
    node_ids: list[int | None] = field(default_factory=list)
    seconds: float | None = None
    audit_seconds_on_path: float | None = None


@dataclass
class Training(Record):
    federation: FederationInfo
    rounds: list[RoundRecord]
    final_test_accuracy: float | None


@dataclass
class Realism(Record):
    """The realism card of one headline figure: what the server received, what it was granted, how the model
    ran, and anything the attack used that a real server would not have."""

    update: Literal["sent", "probe"]
    received: str  # gradient | delta
    records_per_update: int | None  # the client's records behind the update (granted or not)
    local_steps: int | None
    local_epochs: int | None
    local_batch_size: int | None
    num_clients: int  # > 1: the server saw only a secure-aggregation sum
    granted: list[str]  # metadata the threat model grants the server
    model_mode: Literal["train", "eval"]  # BatchNorm batch statistics (train) or running statistics (eval)
    bn_prior: bool | None = None  # BatchNorm running statistics used as a prior (None: no BatchNorm)
    beyond_server: list[str] = field(default_factory=list)  # what a real honest server would not have
    identifiable: str | None = None  # what the model's structure lets this update determine (None: unknown)


@dataclass
class InversionTarget(Record):
    index: int
    label: int
    recovered_label: int | None
    psnr: float
    ssim: float
    mse: float
    baseline_psnr: float  # the better trivial baseline (flat image, dataset mean image)
    rebuilt: bool  # the one rule: fedleak.metrics.image.is_rebuilt
    seconds: float
    client: int | None = None


@dataclass
class InversionSummary(Record):
    psnr_median: float
    psnr_mean: float
    ssim_mean: float
    baseline_psnr_median: float
    label_accuracy: float | None
    rebuilt: int
    total: int
    seconds_total: float

    @classmethod
    def of(cls, targets: list[InversionTarget], seconds_total: float) -> InversionSummary:
        """The summary of scored targets (the one used by invert, the audit and the Flower run folder)."""
        psnrs = [t.psnr for t in targets]
        labelled = [t for t in targets if t.recovered_label is not None]
        return cls(
            psnr_median=statistics.median(psnrs),
            psnr_mean=statistics.fmean(psnrs),
            ssim_mean=statistics.fmean(t.ssim for t in targets),
            baseline_psnr_median=statistics.median(t.baseline_psnr for t in targets),
            label_accuracy=(sum(t.label == t.recovered_label for t in labelled) / len(labelled)) if labelled else None,
            rebuilt=sum(t.rebuilt for t in targets),
            total=len(targets),
            seconds_total=seconds_total,
        )


@dataclass
class InversionEntry(Record):
    """One attack on the updates of the chosen clients in one round."""

    update: Literal["sent", "probe"]
    attack: str
    round: int
    federation: str  # FederationInfo.name
    clients: list[int]
    realism: Realism
    status: Literal["done", "not applicable", "failed"] = "done"
    note: str | None = None  # why an attack did not apply or failed, or what it could not do
    targets: list[InversionTarget] = field(default_factory=list)
    summary: InversionSummary | None = None
    image: str | None = None


@dataclass
class Roc(Record):
    auc: float
    auc_ci: list[float]
    tpr_at_fpr: dict[str, float | None]
    tpr_at_fpr_ci: dict[str, list[float] | None]
    counts: dict[str, int]
    balanced_accuracy: float
    curve: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class MembershipPart(Record):
    """Membership inference against one target (the final global model, or one client's update)."""

    target: str  # "global" or "client:N"
    description: str
    federation: FederationInfo  # the federation whose model was attacked (with its test accuracy)
    attacks: dict[str, Roc]
    train_accuracy: float | None = None
    realism: Realism | None = None  # for a client's update
    exposed: list[dict[str, Any]] = field(default_factory=list)  # the most exposed members (index, label, score)
    exposed_threshold: dict[str, Any] = field(default_factory=dict)  # the FPR level and threshold they exceed
    exposed_image: str | None = None  # their thumbnails, for image data
    image: str | None = None  # a ROC picture in the run folder (else the report draws one from ``curve``)


@dataclass
class Privacy(Record):
    """The accountant's guarantee and what a membership attack proves empirically, on one federation."""

    federation: str | None = None
    epsilon: float | None = None
    delta: float | None = None
    accountant: str | None = None
    epsilon_lower_bound: float | None = None
    lower_bound_method: str | None = None
    attack: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class TextEntry(Record):
    update: Literal["sent", "probe"]
    attack: str
    dataset: str
    model: str
    targets: list[dict[str, Any]]
    summary: dict[str, Any]


@dataclass
class Scenario(Record):
    """One defense (or none) applied to every federation of the audit."""

    defense: str
    training: Training
    membership_training: Training | None = None  # when membership runs on its own federation
    privacy: list[Privacy] = field(default_factory=list)
    inversion: list[InversionEntry] = field(default_factory=list)
    membership: list[MembershipPart] = field(default_factory=list)
    text: list[TextEntry] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # stages that did not apply, each with why


@dataclass
class Setup(Record):
    engine: str
    federations: list[FederationInfo]
    defenses: list[str]
    threat_model: dict[str, Any]
    seed: int


@dataclass
class DPAudit(Record):
    """The canary audit of a DP guarantee (``[audit_dp]``): its own run folder under ``folder``; the figures that
    the report shows, never confused: the accountant's epsilon, the statistically valid lower bound, and the
    one-shot estimate (an estimate, not a bound)."""

    folder: str
    defense: str
    canary_kind: str
    epsilon: float
    delta: float
    epsilon_lower_bound: float
    epsilon_estimate: float | None
    canaries: dict[str, int]
    runs: int
    confidence: float
    bound_exceeds_epsilon: bool
    verdict: str
    image: str | None = None


@dataclass
class AuditResults(Record):
    seed: int
    fedleak_version: str
    scenarios: list[Scenario]
    kind: Literal["audit"] = "audit"
    schema_version: int = SCHEMA_VERSION
    setup: Setup | None = None
    config: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    verdict: list[str] = field(default_factory=list)
    seconds_total: float | None = None
    dp_audit: DPAudit | None = None


def check_schema(results: dict[str, Any], source: str = "results.json") -> None:
    """Refuse results of another schema version, saying which fedleak wrote them."""
    version = results.get("schema_version")
    if version != SCHEMA_VERSION:
        who = results.get("fedleak_version", "an older fedleak")
        raise FedleakInputError(
            f"{source} was written by fedleak {who} (results schema {version or 1}); this fedleak reads schema "
            f"{SCHEMA_VERSION}: rerun the command that wrote it"
        )
