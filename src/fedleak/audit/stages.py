"""The audit's stages, each a pure function of the config and the files earlier stages wrote, so that the run
folder can resume at any stage boundary with the same numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fedleak.audit.config import AuditConfig
from fedleak.audit.runfolder import RunFolder

# ----------------------------------------------------------------- shared helpers


def setup_summary(config: AuditConfig) -> dict[str, Any]:
    fed = config.federation
    return {
        "engine": config.engine,
        **fed.model_dump(),
        "defenses": list(config.defenses),
        "threat_model": {"server": config.threat.server, "grants": list(config.threat.grants)},
        "seed": config.seed,
    }


def _fed_config(config: AuditConfig, membership: bool = False):  # noqa: ANN202
    from fedleak.fl import FedConfig

    fed, m = config.federation, config.membership
    over = membership and m.dataset is not None
    return FedConfig(
        clients=(m.clients or fed.clients) if membership else fed.clients,
        rounds=(m.rounds or fed.rounds) if membership else fed.rounds,
        fraction=fed.fraction,
        mode=fed.mode,
        local_epochs=(m.local_epochs or fed.local_epochs) if membership else fed.local_epochs,
        batch_size=fed.batch_size,
        lr=(m.lr or fed.lr) if membership else fed.lr,
        partition=fed.partition if not over else "iid",
        seed=config.seed,
    )


def build_federation(config: AuditConfig, defense: str, membership: bool = False):  # noqa: ANN201
    """The federation of one scenario (its own dataset/model when the membership part overrides them)."""
    from fedleak.audit.train import train_test_split
    from fedleak.data import load
    from fedleak.defenses import plan
    from fedleak.fl import Federation
    from fedleak.models import build

    fed = config.federation
    m = config.membership
    dataset = (m.dataset or fed.dataset) if membership else fed.dataset
    model_spec = (m.model or fed.model) if membership else fed.model
    data = load(dataset)
    train, test = train_test_split(data, fed.test_fraction, fed.samples if not m.dataset else 0, config.seed)
    p = plan([] if defense == "none" else [defense])
    model = build(model_spec, data.spec, seed=config.seed, device=config.device)
    federation = Federation(
        model, train, test, _fed_config(config, membership),
        transforms=p.transforms, trainer=p.trainer, aggregator=p.aggregator,
    )
    return federation, p, data


def save_update(update, path: Path) -> None:  # noqa: ANN001
    """A ClientUpdate's tensors as safetensors (payload, global state, buffers) and its metadata as JSON."""
    from fedleak.models import save_weights
    from fedleak.runio import atomic_write_json

    tensors = {f"payload/{k}": v for k, v in update.payload.items()}
    tensors |= {f"global/{k}": v for k, v in update.global_state.items()}
    tensors |= {f"buffers/{k}": v for k, v in (update.buffers or {}).items()}
    if update.labels is not None:
        tensors["labels"] = update.labels
    save_weights(tensors, path.with_suffix(".safetensors"))
    meta = {k: getattr(update, k) for k in ("model", "kind", "num_samples", "local_steps", "local_lr", "batch_size",
                                            "client", "round", "num_clients", "train_mode")}
    atomic_write_json(path.with_suffix(".json"), meta)


def load_update(path: Path, data_spec):  # noqa: ANN001, ANN201
    from safetensors.torch import load_file

    from fedleak.fl import ClientUpdate
    from fedleak.runio import read_json

    t = load_file(str(path.with_suffix(".safetensors")))
    meta = read_json(path.with_suffix(".json"))

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix) + 1 :]: v for k, v in t.items() if k.startswith(prefix + "/")}

    return ClientUpdate(
        global_state=part("global"), payload=part("payload"), buffers=part("buffers") or None,
        labels=t.get("labels"), data_spec=data_spec, **meta,
    )


# ----------------------------------------------------------------- training


def train_stage(run: RunFolder, config: AuditConfig, defense: str, echo, membership: bool = False) -> dict:  # noqa: ANN001
    """Federated training of one scenario; keeps the updates the attack stages need (as files)."""
    from fedleak.models import save_weights

    slug = ("mia-" if membership else "") + _slug(defense)
    federation, p, _ = build_federation(config, defense, membership)
    keep_rounds: set[int] = set()
    if config.inversion.enabled and not membership:
        keep_rounds |= set(config.inversion.rounds)
    m_client = config.membership.client
    last = federation.config.rounds
    want_client_update = config.membership.enabled and "client" in config.membership.targets
    if want_client_update and (membership or not config.membership.dataset):
        keep_rounds.add(last)
    ckpt = run.path / "checkpoints"
    rounds, kept = [], {}
    results = _run_rounds(config, federation, p, keep_rounds)
    for r in results:
        rounds.append({"round": r.round, "test_accuracy": r.test_accuracy, "test_loss": r.test_loss,
                       "clients": r.sampled})
        echo(f"[{defense}] round {r.round}: test accuracy {r.test_accuracy:.3f}")
        if r.round in keep_rounds and r.updates:
            g = ckpt / f"{slug}_round{r.round}_global.safetensors"
            save_weights(r.updates[0].global_state, g)
            kept[str(r.round)] = {"global": g.name, "clients": {}}
            for u in r.updates:
                wanted = (u.client in config.inversion.clients) or (r.round == last and u.client == m_client)
                if wanted:
                    path = ckpt / f"{slug}_round{r.round}_client{u.client}"
                    save_update(u, path)
                    kept[str(r.round)]["clients"][str(u.client)] = path.name
    final = ckpt / f"{slug}_final.safetensors"
    save_weights(federation.model, final)
    return {
        "rounds": rounds,
        "final_test_accuracy": rounds[-1]["test_accuracy"] if rounds else None,
        "kept": kept,
        "final_model": final.name,
        "privacy": p.privacy(),
    }


def _run_rounds(config: AuditConfig, federation, p, keep_rounds: set[int]):  # noqa: ANN001, ANN202
    if config.engine == "flower":
        from fedleak.flower import run_flower_federation

        run = run_flower_federation(
            federation.model, federation.train, federation.test, federation.config,
            transforms=p.transforms, trainer=p.trainer,
        )
        return list(run.rounds)
    out = []
    while federation.round < federation.config.rounds:
        out.append(federation.step(keep_updates=(federation.round + 1) in keep_rounds))
    return out


def _slug(defense: str) -> str:
    from fedleak.audit.pipeline import scenario_slug

    return scenario_slug(defense)
