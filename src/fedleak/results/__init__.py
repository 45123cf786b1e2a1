"""The torch-free schema of a run folder's ``results.json``: dataclasses the audit writes and the report reads.

Every record has ``to_dict()`` / ``from_dict()``; :func:`load_audit` reads a results.json and refuses one of
another schema version with one line that says which fedleak wrote it.

    >>> from fedleak.results import AuditResults, SCHEMA_VERSION
    >>> r = AuditResults(seed=0, fedleak_version="0.0", scenarios=[])
    >>> AuditResults.from_dict(r.to_dict()) == r, r.to_dict()["schema_version"] == SCHEMA_VERSION
    (True, True)
"""

from fedleak.results.records import (
    SCHEMA_VERSION,
    AuditResults,
    DPAudit,
    FederationInfo,
    InversionEntry,
    InversionSummary,
    InversionTarget,
    MembershipPart,
    Privacy,
    Realism,
    Roc,
    RoundRecord,
    Scenario,
    Setup,
    TextEntry,
    Training,
    check_schema,
)
from fedleak.results.serial import Record, from_dict

__all__ = [
    "SCHEMA_VERSION",
    "AuditResults",
    "DPAudit",
    "FederationInfo",
    "InversionEntry",
    "InversionSummary",
    "InversionTarget",
    "MembershipPart",
    "Privacy",
    "Realism",
    "Record",
    "Roc",
    "RoundRecord",
    "Scenario",
    "Setup",
    "TextEntry",
    "Training",
    "check_schema",
    "from_dict",
]
