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
        batch_size=(m.batch_size or fed.batch_size) if membership else fed.batch_size,
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
    test_fraction = (m.test_fraction or fed.test_fraction) if membership else fed.test_fraction
    train, test = train_test_split(data, test_fraction, fed.samples if not m.dataset else 0, config.seed)
    fcfg = _fed_config(config, membership)
    p = plan([] if defense == "none" else [defense]).bind(rounds=fcfg.rounds, clients=fcfg.clients)
    model = p.prepare(build(model_spec, data.spec, seed=config.seed, device=config.device))
    federation = Federation(model, train, test, fcfg, **p.federation_options)
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
    meta = {
        k: getattr(update, k)
        for k in (
            "model",
            "kind",
            "num_samples",
            "local_steps",
            "local_lr",
            "batch_size",
            "client",
            "round",
            "num_clients",
            "train_mode",
        )
    }
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
        global_state=part("global"),
        payload=part("payload"),
        buffers=part("buffers") or None,
        labels=t.get("labels"),
        data_spec=data_spec,
        **meta,
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
        rounds.append(
            {
                "round": r.round,
                "test_accuracy": r.test_accuracy,
                "test_loss": r.test_loss,
                "clients": r.sampled,
            }
        )
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
            federation.model,
            federation.train,
            federation.test,
            federation.config,
            secagg=bool(p.secagg),
            **p.federation_options,
        )
        return list(run.rounds)
    out = []
    while federation.round < federation.config.rounds:
        out.append(federation.step(keep_updates=(federation.round + 1) in keep_rounds))
    return out


def _slug(defense: str) -> str:
    from fedleak.audit.pipeline import scenario_slug

    return scenario_slug(defense)


# ----------------------------------------------------------------- inversion


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def inversion_stage(
    run: RunFolder,
    config: AuditConfig,
    defense: str,
    trained: dict,
    attack: str,
    rnd: int,
    echo,  # noqa: ANN001
) -> dict:
    """Attack the chosen clients' updates of round ``rnd`` (all of them as one batched attack)."""
    from fedleak.attacks.inversion import invert_batch
    from fedleak.audit.figures import save_reconstruction_png
    from fedleak.defenses import secure_sum
    from fedleak.fl import ThreatModel, client_update
    from fedleak.metrics import image_scores

    inv, fed = config.inversion, config.federation
    federation, p, data = build_federation(config, defense)
    threat = ThreatModel.from_grants(config.threat.grants)
    kept = trained["kept"].get(str(rnd))
    if kept is None:
        return {"attack": attack, "round": rnd, "skipped": f"round {rnd} was not kept"}
    ckpt = run.path / "checkpoints"
    model = federation.model
    model.load_state_dict(_load_state(ckpt / kept["global"]))
    updates, originals, clients = [], [], []
    for c in inv.clients:
        local = federation.client_data(c)
        if inv.probe_batch_size > 0:
            g = torch.Generator().manual_seed(run.seed * 7919 + rnd * 101 + c)
            pos = torch.randperm(len(local), generator=g)[: inv.probe_batch_size].sort().values
            records = local.subset(pos)
            u = client_update(
                model,
                records,
                trainer=p.trainer,
                transforms=p.transforms,
                threat=ThreatModel(labels=True),
                client=c,
                round=rnd,
                seed=run.seed + c,
                train_mode=federation.config.train_mode,
            )
            if p.secagg and p.secagg > 1:  # the server sees only the sum with K-1 other clients' probes
                others = [(c + j) % fed.clients for j in range(1, p.secagg)]
                group = [u]
                for o in others:
                    od = federation.client_data(o)
                    opos = torch.randperm(len(od), generator=g)[: inv.probe_batch_size].sort().values
                    group.append(
                        client_update(
                            model,
                            od.subset(opos),
                            trainer=p.trainer,
                            transforms=p.transforms,
                            threat=ThreatModel(labels=True),
                            client=o,
                            round=rnd,
                        )
                    )
                u = secure_sum(group)
            u = threat.view(u)
        else:
            name = kept["clients"].get(str(c))
            if name is None:
                continue  # this client was not sampled in this round
            u = threat.view(load_update(ckpt / name, data.spec))
            records = local
        updates.append(u)
        originals.append(records)
        clients.append(c)
    if not updates:
        return {"attack": attack, "round": rnd, "skipped": "none of the chosen clients was sampled"}
    options = {
        "iterations": inv.iterations,
        "restarts": inv.restarts,
        "seed": run.seed,
        "device": config.device,
    }
    recs = invert_batch(updates, attack, **options)
    targets, pictures = [], []
    for c, rec, records in zip(clients, recs, originals, strict=True):
        truth_px = records.pixels()
        scores = image_scores(rec.pixels.cpu(), truth_px)
        perm = scores["perm"]
        rec_labels = rec.labels[perm].tolist() if rec.labels is not None and len(rec.labels) == len(perm) else None
        for i in range(len(truth_px)):
            targets.append(
                {
                    "index": int(records.indices[i]),
                    "client": c,
                    "label": int(records.labels[i]),
                    "recovered_label": None if rec_labels is None else int(rec_labels[i]),
                    "psnr": float(scores["psnr"][i]),
                    "ssim": float(scores["ssim"][i]),
                    "mse": float(scores["mse"][i]),
                    "seconds": rec.seconds / max(1, len(truth_px)),
                }
            )
        pictures.append((truth_px, rec.pixels[perm].cpu(), scores["psnr"]))
    image = f"inversion_{_slug(defense)}_{attack}_r{rnd}.png"
    names = data.spec.class_names
    save_reconstruction_png(
        run.path / image,
        torch.cat([p[0] for p in pictures]),
        torch.cat([p[1] for p in pictures]),
        torch.cat([p[2] for p in pictures]),
        labels=[names[t["label"]] for t in targets],
        recovered_labels=[("?" if t["recovered_label"] is None else names[t["recovered_label"]]) for t in targets],
    )
    psnrs = torch.tensor([t["psnr"] for t in targets])
    labelled = [t for t in targets if t["recovered_label"] is not None]
    summary = {
        "psnr_median": float(psnrs.double().quantile(0.5)),
        "psnr_mean": float(psnrs.mean()),
        "ssim_mean": float(torch.tensor([t["ssim"] for t in targets]).mean()),
        "label_accuracy": (sum(t["label"] == t["recovered_label"] for t in labelled) / len(labelled))
        if labelled
        else None,
        "recovered": int((psnrs > inv.recovered_threshold_db).sum()),
        "total": len(targets),
        "recovered_threshold_db": inv.recovered_threshold_db,
        "seconds_total": sum(r.seconds for r in recs),
    }
    kind = updates[0].kind
    echo(
        f"[{defense}] {attack} round {rnd}: {summary['recovered']}/{summary['total']} recovered, "
        f"median PSNR {summary['psnr_median']:.1f} dB"
    )
    return {
        "attack": attack,
        "round": rnd,
        "clients": clients,
        "update_kind": kind,
        "num_clients": updates[0].num_clients,
        "probe_batch_size": inv.probe_batch_size,
        "targets": targets,
        "summary": summary,
        "image": image,
    }


# ----------------------------------------------------------------- membership


def membership_stage(run: RunFolder, config: AuditConfig, defense: str, trained: dict, echo) -> dict:  # noqa: ANN001
    """Membership inference against the final global model (black box, with reference models) and against
    one client's last update (the server's white-box view of that client). Returns the entries and the
    empirical epsilon lower bound the strongest attack on the global model proves."""
    from fedleak.attacks.membership import MembershipContext, Records, membership_scores, update_scores
    from fedleak.fl import ThreatModel, TrainSpec, evaluate
    from fedleak.metrics import roc_report
    from fedleak.metrics.privacy import audit_privacy

    m, fed = config.membership, config.federation
    separate = m.dataset is not None
    federation, p, data = build_federation(config, defense, membership=separate)
    ckpt = run.path / "checkpoints"
    model = federation.model
    model.load_state_dict(_load_state(ckpt / trained["final_model"]))
    members_all, held = federation.train, federation.test
    n = min(len(members_all), len(held) // 2, 500)
    g = torch.Generator().manual_seed(run.seed)
    members = members_all.subset(torch.randperm(len(members_all), generator=g)[:n].sort().values)
    non_members = held.subset(range(n))
    population = held.subset(range(n, len(held)))
    records = Records.of(members).cat(Records.of(non_members))
    is_member = torch.cat([torch.ones(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool)])
    fcfg = federation.config
    train_spec = TrainSpec(epochs=min(60, fcfg.rounds * fcfg.local_epochs), batch_size=fcfg.batch_size, lr=fcfg.lr)
    ctx = MembershipContext(
        model,
        records,
        population=Records.of(population),
        references=m.references,
        model_spec=m.model or fed.model if separate else fed.model,
        data_spec=data.spec,
        train_spec=train_spec,
        seed=run.seed,
        device=config.device,
        checkpoint_dir=ckpt / f"references_{_slug(defense)}",
    )
    attacks, all_scores = {}, {}
    for a in m.attacks:
        all_scores[a] = membership_scores(model, None, a, context=ctx)
        attacks[a] = roc_report(all_scores[a], is_member)
    train_acc, _ = evaluate(model, *members_all.tensors())
    test_acc, _ = evaluate(model, *held.tensors())
    out, empirical = [], {}
    best = max(attacks, key=lambda k: attacks[k]["tpr_at_fpr"]["0.01"]) if attacks else None
    if best:
        priv = trained["privacy"]
        empirical = audit_privacy(
            all_scores[best].numpy(),
            is_member.numpy(),
            priv.get("epsilon"),
            priv.get("delta") or 1e-5,
            seed=run.seed,
        )
        empirical["attack"] = best
    if "global" in m.targets:
        if best:
            echo(
                f"[{defense}] membership on the global model: best {best} AUC {attacks[best]['auc']:.3f}, "
                f"TPR@1%FPR {attacks[best]['tpr_at_fpr']['0.01']:.3f}"
            )
        out.append(
            {
                "target": "global",
                "description": "final global model (black box, reference models)",
                "members": n,
                "non_members": n,
                "attacks": attacks,
                "target_accuracy": {"train_accuracy": train_acc, "test_accuracy": test_acc},
            }
        )
    last = str(fcfg.rounds)
    name = trained["kept"].get(last, {}).get("clients", {}).get(str(m.client))
    if "client" in m.targets and name:
        threat = ThreatModel.from_grants(config.threat.grants)
        update = threat.view(load_update(ckpt / name, data.spec))
        local = federation.client_data(m.client)
        k = min(len(local), len(non_members))
        x = torch.cat([local.inputs(range(k)), non_members.inputs(range(k))])
        y = torch.cat([local.labels[:k], non_members.labels[:k]])
        truth = torch.cat([torch.ones(k, dtype=torch.bool), torch.zeros(k, dtype=torch.bool)])
        signal = "loss-drop" if update.kind == "delta" else "gradient-alignment"
        rep = roc_report(update_scores(update, x, y, signal), truth)
        echo(f"[{defense}] membership in client {m.client}'s data from its round-{last} update: AUC {rep['auc']:.3f}")
        out.append(
            {
                "target": f"client:{m.client}",
                "description": f"client {m.client}'s data, from the update it sent in round {last} (server's view)",
                "members": k,
                "non_members": k,
                "attacks": {signal: rep},
            }
        )
    return {"entries": out, "empirical": empirical}


# ----------------------------------------------------------------- one scenario


def scenario(run: RunFolder, config: AuditConfig, defense: str, echo) -> dict:  # noqa: ANN001
    """Train, then attack, one scenario (the undefended setup or one defense); each step a resumable stage."""
    slug = _slug(defense)
    trained = run.stage(f"train-{slug}", lambda: train_stage(run, config, defense, echo))
    result: dict[str, Any] = {
        "defense": defense,
        "training": {"rounds": trained["rounds"], "final_test_accuracy": trained["final_test_accuracy"]},
        "privacy": trained["privacy"],
    }
    if config.inversion.enabled:
        cases = []
        for attack in config.inversion.attacks:
            for rnd in config.inversion.rounds:
                cases.append(
                    run.stage(
                        f"invert-{slug}-{attack}-r{rnd}",
                        lambda a=attack, r=rnd: inversion_stage(run, config, defense, trained, a, r, echo),
                    )
                )
        result["inversion"] = [c for c in cases if "skipped" not in c]
    if config.membership.enabled:
        mtrained = trained
        if config.membership.dataset is not None:
            mtrained = run.stage(f"train-mia-{slug}", lambda: train_stage(run, config, defense, echo, membership=True))
            result["membership_training"] = {
                "dataset": config.membership.dataset,
                "rounds": mtrained["rounds"],
                "final_test_accuracy": mtrained["final_test_accuracy"],
            }
            result["privacy"] = mtrained["privacy"] if mtrained["privacy"].get("epsilon") else result["privacy"]
        mia = run.stage(f"membership-{slug}", lambda: membership_stage(run, config, defense, mtrained, echo))
        result["membership"] = mia["entries"]
        if mia["empirical"]:
            result["privacy"] = {**result["privacy"], **mia["empirical"]}
    return result


# ----------------------------------------------------------------- text


def text_case(run: RunFolder, config: AuditConfig, echo) -> dict:  # noqa: ANN001
    """Text recovery from single-record gradient updates of a text model (the undefended scenario)."""
    from fedleak.audit.text_inversion import run_text_inversion

    t = config.text
    res = run_text_inversion(
        dataset=t.dataset,
        model=t.model,
        attack=t.attack,
        num_images=t.num_records,
        iterations=t.iterations,
        seed=config.seed,
        device=config.device,
        echo=lambda s: None,
    )
    summary = res.get("summary", {})
    echo(f"[none] text {t.attack}: median token accuracy {summary.get('token_accuracy_median', float('nan')):.2f}")
    return {
        "attack": t.attack,
        "dataset": t.dataset,
        "model": t.model,
        "targets": res.get("targets", []),
        "summary": summary,
    }
