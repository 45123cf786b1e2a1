"""The audit config: a TOML file a person writes, validated with pydantic. An unknown or misspelt key is an
error naming the key and the nearest valid one.

    seed = 0
    engine = "local"                  # or "flower" (Flower's simulation engine)
    defenses = ["prune:0.99"]         # each one a scenario beside the undefended setup

    [federation]
    dataset = "lfw-faces"
    model = "lenet"                   # or your own: "path/to/file.py:factory"
    weights = "trained.safetensors"   # optional: start from trained weights
    clients = 10
    rounds = 3
    mode = "fedavg"                   # or "fedsgd"

    [inversion]                       # attacks on the updates chosen clients sent in chosen rounds
    attacks = ["auto"]                # auto: the attacks that fit the update (exact ones, then a FedAvg replay
                                      # for deltas or a gradient match for gradients); or names
    rounds = [1]
    clients = [0, 1, 2, 3]
    probe_batch_size = 0              # B > 0 adds a labelled probe scenario: "if a client sent the gradient of
    probe_attacks = ["idlg"]          # B of its records" (an honest server never receives it); undefended setup
    probe_defended = false            # only, unless this is true

    [membership]                      # attacks on the final global model and on one client's update
    attacks = ["loss", "lira"]
    references = 8
"""

from __future__ import annotations

import difflib
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fedleak.errors import FedleakInputError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Federation(_Strict):
    dataset: str = "digits"
    model: str = "mlp"
    partition: str = "iid"
    clients: int = Field(10, ge=1)
    rounds: int = Field(5, ge=1)
    fraction: float = Field(1.0, gt=0, le=1, allow_inf_nan=False)
    mode: Literal["fedavg", "fedsgd"] = "fedavg"
    local_epochs: int = Field(1, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(0.1, gt=0, allow_inf_nan=False)
    test_fraction: float = Field(0.2, gt=0, lt=1, allow_inf_nan=False)
    samples: int = Field(0, ge=0)
    weights: str | None = None  # the initial global model: a .safetensors file (e.g. from fedleak train)


class Threat(_Strict):
    server: Literal["honest-but-curious"] = "honest-but-curious"
    grants: list[str] = ["num_samples", "local_steps", "local_lr", "batch_size"]


class Inversion(_Strict):
    enabled: bool = True
    attacks: list[str] = ["auto"]
    rounds: list[int] = [1]
    clients: list[int] = [0]
    probe_batch_size: int = Field(0, ge=0)
    probe_attacks: list[str] = ["idlg"]
    probe_defended: bool = False  # also probe under each defense (by default only the undefended setup)
    iterations: int = Field(100, ge=1, le=1_000_000)
    restarts: int = Field(1, ge=1, le=1000)


class Membership(_Strict):
    enabled: bool = True
    attacks: list[str] = ["loss", "lira"]
    references: int = Field(8, ge=2, le=1024)
    targets: list[Literal["global", "client"]] = ["global", "client"]
    client: int = Field(0, ge=0)
    dataset: str | None = None  # run the membership part on its own federation of this dataset
    model: str | None = None
    rounds: int | None = Field(None, ge=1)
    local_epochs: int | None = Field(None, ge=1)
    clients: int | None = Field(None, ge=1)
    lr: float | None = Field(None, gt=0, allow_inf_nan=False)
    batch_size: int | None = Field(None, ge=1)
    # held-out share: the non-members and the population
    test_fraction: float | None = Field(None, gt=0, lt=1, allow_inf_nan=False)


class Text(_Strict):
    enabled: bool = False
    dataset: str = "demo-records"
    model: str = "transformer"
    attack: str = "tag"
    num_records: int = Field(4, ge=1, le=100_000)
    batch_size: int = Field(1, ge=1, le=4096)  # records per client update (DAGER reads whole batches)
    iterations: int | None = Field(None, ge=1, le=1_000_000)


class AuditDP(_Strict):
    """``[audit_dp]``: audit the DP guarantee itself with canaries in one training run (``fedleak audit-dp``),
    on the federation's dataset and model unless named here."""

    enabled: bool = False
    defense: str = "dp-sgd:epsilon=8,delta=1e-5"
    canaries: Literal["gradient", "record", "client"] = "gradient"
    num_canaries: int | None = Field(None, ge=2, le=100_000)
    dataset: str | None = None
    model: str | None = None
    clients: int = Field(10, ge=2, le=1000)
    rounds: int = Field(30, ge=1, le=10_000)
    # a Flower simulation under Flower's own DP wrapper (server- or client-side fixed clipping), client canaries
    flower: Literal["server", "client"] | None = None


class AuditConfig(_Strict):
    seed: int = 0
    engine: Literal["local", "flower"] = "local"
    device: str = "cpu"
    defenses: list[str] = []
    federation: Federation = Federation()
    threat: Threat = Threat()
    inversion: Inversion = Inversion()
    membership: Membership = Membership()
    text: Text = Text()
    audit_dp: AuditDP = AuditDP()

    def resolved(self) -> dict[str, Any]:
        """The config with every default filled in (written as the run's config.toml)."""
        return _drop_none(self.model_dump())


def _drop_none(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _drop_none(v) for k, v in d.items() if v is not None}
    return d


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return []
        model = field.annotation
    return list(model.model_fields)


def _explain(err: ValidationError, source: str) -> FedleakInputError:
    e = err.errors()[0]
    where = ".".join(str(p) for p in e["loc"])
    if e["type"] == "extra_forbidden":
        key = str(e["loc"][-1])
        allowed = _allowed_keys(AuditConfig, e["loc"])
        near = difflib.get_close_matches(key, allowed, n=1, cutoff=0.5)
        hint = f"; did you mean {near[0]!r}?" if near else f"; valid keys here: {', '.join(allowed)}"
        return FedleakInputError(f"{source}: unknown key {where!r}{hint}")
    return FedleakInputError(f"{source}: {where}: {e['msg']} (got {e.get('input')!r})")


def parse_config(data: dict[str, Any], source: str = "config") -> AuditConfig:
    try:
        return AuditConfig.model_validate(data)
    except ValidationError as err:
        raise _explain(err, source) from None


def load_config(path: str | Path) -> AuditConfig:
    p = Path(path)
    if not p.exists():
        raise FedleakInputError(f"config {p} does not exist; give the path of a .toml audit config")
    if not p.is_file():
        raise FedleakInputError(f"config {p} is a folder; give the path of a .toml audit config file")
    try:
        data = tomllib.loads(p.read_text())
    except OSError as e:
        raise FedleakInputError(f"config {p} cannot be read ({e.strerror}); check its permissions") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise FedleakInputError(f"{p} is not valid TOML ({e}); fix the syntax") from None
    return parse_config(data, str(p))


def dump_config(config: AuditConfig) -> str:
    import tomli_w

    return tomli_w.dumps(config.resolved())
