"""The audit's stages. Each takes the scenario's :class:`~fedleak.audit.scenario.FederationSetup` (built once)
and the files earlier stages wrote, calls the experiment's case (the same code as ``fedleak invert`` /
``fedleak mia`` / the text inversion), and returns a results record as a dict, so the run folder can resume at
any stage boundary with the same numbers."""

from __future__ import annotations

from pathlib import Path

import torch

from fedleak.attacks.inversion import auto_attacks, why_not
from fedleak.audit.config import AuditConfig
from fedleak.audit.inversion_case import attack_and_score, dataset_mean_image, realism_card
from fedleak.audit.mia import attack_target, attack_update, strongest_attack
from fedleak.audit.runfolder import RunFolder, damaged
from fedleak.audit.scenario import FederationSetup
from fedleak.audit.seeds import derive_seed, generator
from fedleak.audit.slug import scenario_slug
from fedleak.defenses import secure_sum
from fedleak.fl import ClientUpdate, ThreatModel, TrainSpec, client_update, evaluate
from fedleak.metrics.privacy import audit_privacy
from fedleak.models import save_weights
from fedleak.report.figures import save_reconstruction_png, thumbnails_png
from fedleak.results import (
    DPAudit,
    InversionEntry,
    MembershipPart,
    Privacy,
    Roc,
    RoundRecord,
    TextEntry,
    Training,
)
from fedleak.runio import atomic_write_bytes, atomic_write_json, read_json

# ----------------------------------------------------------------- client updates as files


def save_update(update: ClientUpdate, path: Path) -> None:
    """A ClientUpdate's tensors as safetensors (payload, global state, buffers) and its metadata as JSON."""
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
    meta["extras"] = {k: v for k, v in update.extras.items() if isinstance(v, (int, float, str, bool, type(None)))}
    atomic_write_json(path.with_suffix(".json"), meta)


def load_update(path: Path, data_spec) -> ClientUpdate:  # noqa: ANN001
    t = _load_state(path.with_suffix(".safetensors"))
    try:
        meta = read_json(path.with_suffix(".json"))
    except (OSError, ValueError) as e:
        raise damaged(path.with_suffix(".json"), e) from None

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


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own SafetensorError, or OSError for a missing file
        raise damaged(path, e) from None


# ----------------------------------------------------------------- training


def train_stage(
    run: RunFolder, config: AuditConfig, fs: FederationSetup, slug: str, keep: dict[int, set[int]], echo
) -> dict:  # noqa: ANN001
    """Federated training of one federation of one scenario; keeps the updates the attack stages need (files).
    ``keep``: round -> the clients whose sent update is kept."""
    federation = fs.federation()
    ckpt = run.path / "checkpoints"
    rounds, kept = [], {}
    tag = f"{fs.key}-{slug}"
    for r in _run_rounds(config, fs, federation, set(keep)):
        rounds.append(
            RoundRecord(round=r.round, test_accuracy=r.test_accuracy, test_loss=r.test_loss, clients=r.sampled)
        )
        echo(
            f"[{fs.info.name}, {fs.plan.label}] round {r.round}/{fs.config.rounds}: test accuracy {r.test_accuracy:.3f}"
        )
        if r.round in keep and r.updates:
            kept[str(r.round)] = {}
            for u in r.updates:
                if u.client in keep[r.round]:
                    path = ckpt / f"{tag}_round{r.round}_client{u.client}"
                    save_update(u, path)
                    kept[str(r.round)][str(u.client)] = path.name
    final = ckpt / f"{tag}_final.safetensors"
    save_weights(federation.model, final)
    info = fs.info.replace(test_accuracy=rounds[-1].test_accuracy if rounds else None)
    training = Training(federation=info, rounds=rounds, final_test_accuracy=info.test_accuracy)
    return {"training": training.to_dict(), "kept": kept, "final_model": final.name, "privacy": fs.plan.privacy()}


def _run_rounds(config: AuditConfig, fs: FederationSetup, federation, keep_rounds: set[int]):  # noqa: ANN001, ANN202
    if config.engine == "flower":
        from fedleak.flower import run_flower_federation

        run = run_flower_federation(
            federation.model,
            federation.train,
            federation.test,
            federation.config,
            secagg=bool(fs.plan.secagg),
            **fs.plan.federation_options,
        )
        return list(run.rounds)
    out = []
    while federation.round < federation.config.rounds:
        out.append(federation.step(keep_updates=(federation.round + 1) in keep_rounds))
    return out


# ----------------------------------------------------------------- inversion


def choose_attacks(wanted: list[str], update: ClientUpdate) -> list[tuple[str, str | None]]:
    """(attack, why not) pairs: 'auto' -> every exact attack that fits plus the first optimisation attack that
    fits this update; named attacks as given, each with the reason it does not fit (None: it fits)."""
    out: list[tuple[str, str | None]] = []
    for w in wanted:
        if w != "auto":
            out.append((w, why_not(w, update)))
            continue
        out += [(a, None) for a in auto_attacks(update)]
    seen, unique = set(), []
    for a, why in out:
        if a not in seen:
            seen.add(a)
            unique.append((a, why))
    return unique


def _probe_update(fs: FederationSetup, model, federation, client: int, rnd: int, batch: int, run_seed: int):  # noqa: ANN001, ANN202
    """What the audit computes itself: a FedSGD gradient of ``batch`` of the client's records. An honest server
    never receives it; it answers "if a client sent one record's gradient"."""
    local = federation.client_data(client)
    g = generator(run_seed, "probe", rnd, client)
    pos = torch.randperm(len(local), generator=g)[:batch].sort().values
    records = local.subset(pos)

    def grad_of(recs, c: int) -> ClientUpdate:  # noqa: ANN001
        return client_update(
            model,
            recs,
            trainer=fs.plan.trainer,
            transforms=fs.plan.transforms,
            threat=ThreatModel(labels=True),
            client=c,
            round=rnd,
            seed=derive_seed(run_seed, "probe-client", rnd, c),
            train_mode=fs.config.train_mode,
        )

    u = grad_of(records, client)
    k = int(fs.plan.secagg or 1)
    if k > 1:  # the server sees only the sum with K-1 other clients' probes
        others = [(client + j) % fs.config.clients for j in range(1, k)]
        group = [u]
        for o in others:
            od = federation.client_data(o)
            opos = torch.randperm(len(od), generator=g)[:batch].sort().values
            group.append(grad_of(od.subset(opos), o))
        u = secure_sum(group)
    return fs.threat.view(u), records


def inversion_stage(
    run: RunFolder,
    config: AuditConfig,
    fs: FederationSetup,
    slug: str,
    trained: dict,
    rnd: int,
    kind: str,
    echo,  # noqa: ANN001
) -> list[dict]:
    """Attack the chosen clients' updates of round ``rnd``: ``kind`` "sent" (the updates they really sent, with
    the attacks that fit them) or "probe" (gradients of a few records the audit computes itself; labelled)."""
    inv = config.inversion
    kept = trained["kept"].get(str(rnd), {})
    ckpt = run.path / "checkpoints"
    federation = fs.federation()
    updates, originals, clients = [], [], []
    if kind == "sent":
        for c in inv.clients:
            name = kept.get(str(c))
            if name is None:
                continue  # this client was not sampled in this round
            updates.append(fs.threat.view(load_update(ckpt / name, fs.data.spec)))
            originals.append(federation.client_data(c))
            clients.append(c)
        wanted = list(inv.attacks)
    else:
        model = fs.model()
        first = next(iter(kept.values()), None)
        if first is None:
            return []
        model.load_state_dict(load_update(ckpt / first, fs.data.spec).global_state)
        for c in inv.clients:
            u, records = _probe_update(fs, model, federation, c, rnd, inv.probe_batch_size, run.seed)
            updates.append(u)
            originals.append(records)
            clients.append(c)
        wanted = [a for a in inv.probe_attacks]
    if not updates:
        return []
    mean_img = dataset_mean_image(fs.train)
    tag = f"[{fs.info.name}, {fs.plan.label}]"
    entries = []
    for attack, reason in choose_attacks(wanted, updates[0]):
        card = realism_card(
            updates[0],
            kind,
            fs.threat,
            records=len(originals[0]),
            local_epochs=fs.config.local_epochs if updates[0].kind == "delta" else None,
            local_batch_size=fs.config.batch_size if updates[0].kind == "delta" else None,
            beyond_server=[],
        )
        if kind == "probe":
            sends = (
                f"FedAvg deltas over {fs.config.local_epochs} local epoch(s) of batch {fs.config.batch_size}"
                if fs.config.mode == "fedavg"
                else f"the gradient of a batch of {fs.config.batch_size}"
            )
            card.beyond_server = [
                f"a FedSGD gradient of {inv.probe_batch_size} record(s) computed by the audit; the clients of "
                f"{fs.info.name} send {sends}"
            ]
        base = {"update": kind, "attack": attack, "round": rnd, "federation": fs.info.name, "clients": clients}
        if reason is not None:
            echo(f"{tag} {attack} on the {kind} updates of round {rnd}: not applicable ({reason})")
            entry = InversionEntry(**base, realism=card, status="not applicable", note=reason)
            entries.append(entry.to_dict())
            continue
        options = {
            "iterations": inv.iterations,
            "restarts": inv.restarts,
            "seed": derive_seed(run.seed, "inversion", slug, kind, attack, rnd),
            "device": config.device,
        }
        scored = attack_and_score(updates, originals, attack, options, mean_img, clients)
        if card.bn_prior is not None:  # the model has BatchNorm: did the attack use its running statistics?
            card.bn_prior = any(bool((getattr(r, "extras", None) or {}).get("bn_prior")) for r in scored.recs)
        image = f"inversion_{slug}_{kind}_{attack}_r{rnd}.png"
        names = fs.data.spec.class_names
        save_reconstruction_png(
            run.path / image,
            scored.originals.numpy(),
            scored.reconstructions.numpy(),
            [t.psnr for t in scored.targets],
            labels=[names[t.label] for t in scored.targets],
            recovered_labels=[("?" if t.recovered_label is None else names[t.recovered_label]) for t in scored.targets],
            rebuilt=[t.rebuilt for t in scored.targets],
        )
        s = scored.summary
        echo(
            f"[{fs.info.name}, {fs.plan.label}] {attack} on the {kind} updates of round {rnd}: {s.rebuilt}/{s.total} "
            f"rebuilt, median PSNR {s.psnr_median:.1f} dB (trivial baseline {s.baseline_psnr_median:.1f} dB)"
        )
        notes = list(scored.notes)
        if s.rebuilt == 0:
            notes.append("nothing rebuilt: no reconstruction beat the trivial baselines by the rule")
        note = "; ".join(notes) or None
        entry = InversionEntry(**base, realism=card, targets=scored.targets, summary=s, image=image, note=note)
        entries.append(entry.to_dict())
    return entries


# ----------------------------------------------------------------- membership


def membership_stage(
    run: RunFolder,
    config: AuditConfig,
    fs: FederationSetup,
    slug: str,
    trained: dict,
    echo,  # noqa: ANN001
) -> dict:
    """Membership inference against the final global model of ``fs`` (black box, reference models) and against
    one client's last sent update (the server's white-box view of that client). Returns the parts and the
    privacy record of this federation (the accountant's epsilon and the empirical lower bound)."""
    m = config.membership
    ckpt = run.path / "checkpoints"
    model = fs.model()
    model.load_state_dict(_load_state(ckpt / trained["final_model"]))
    federation = fs.federation()
    members_all, held = fs.train, fs.test
    n = min(len(members_all), len(held) // 2, 500)
    g = generator(run.seed, "membership", fs.key, "members")
    members = members_all.subset(torch.randperm(len(members_all), generator=g)[:n].sort().values)
    non_members = held.subset(range(n))
    population = held.subset(range(n, len(held)))
    fcfg = fs.config
    train_spec = TrainSpec(epochs=min(60, fcfg.rounds * fcfg.local_epochs), batch_size=fcfg.batch_size, lr=fcfg.lr)
    echo(f"[{fs.info.name}, {fs.plan.label}] membership: {n} members, {n} non-members, {m.references} references")
    res = attack_target(
        model,
        members,
        non_members,
        population,
        list(m.attacks),
        model_spec=fs.model_spec,
        train_spec=train_spec,
        references=m.references,
        seed=derive_seed(run.seed, "membership", fs.key, slug),
        device=config.device,
        checkpoint_dir=ckpt / f"references_{fs.key}_{slug}",
        echo=lambda line: echo(f"[{fs.info.name}, {fs.plan.label}]{line}"),
    )
    attacks = res["attacks"]
    train_acc, _ = evaluate(model, *members_all.tensors())
    test_acc, _ = evaluate(model, *held.tensors())
    info = fs.info.replace(test_accuracy=float(test_acc))
    parts: list[MembershipPart] = []
    if "global" in m.targets:
        exposed = list(res.get("exposed") or [])
        exposed_image = None
        if exposed and fs.data.spec.modality == "image":
            where = {int(ix): pos for pos, ix in enumerate(fs.data.indices.tolist())}
            pics = fs.data.pixels([where[int(e["index"])] for e in exposed])
            names = fs.data.spec.class_names
            exposed_image = f"exposed_{fs.key}_{slug}.png"
            atomic_write_bytes(
                run.path / exposed_image,
                thumbnails_png(pics, [f"#{e['index']} {names[e['label']]}" for e in exposed]),
            )
        parts.append(
            MembershipPart(
                target="global",
                description=f"the final global model of {fs.info.name} (black box, {m.references} reference models)",
                federation=info,
                attacks={a: Roc.from_dict(r) for a, r in attacks.items()},
                train_accuracy=float(train_acc),
                exposed=exposed,
                exposed_threshold=dict(res.get("exposed_threshold") or {}),
                exposed_image=exposed_image,
            )
        )
    last = str(fcfg.rounds)
    name = trained["kept"].get(last, {}).get(str(m.client))
    if "client" in m.targets and name:
        update = fs.threat.view(load_update(ckpt / name, fs.data.spec))
        local = federation.client_data(m.client)
        k = min(len(local), len(non_members))
        rep = attack_update(update, local.subset(range(k)), non_members.subset(range(k)))
        parts.append(
            MembershipPart(
                target=f"client:{m.client}",
                description=f"client {m.client}'s data in {fs.info.name}, from the update it sent in round {last}",
                federation=info,
                attacks={rep["signal"]: Roc.from_dict(rep)},
                realism=realism_card(
                    update,
                    "sent",
                    fs.threat,
                    records=len(local),
                    local_epochs=fcfg.local_epochs if update.kind == "delta" else None,
                    local_batch_size=fcfg.batch_size if update.kind == "delta" else None,
                ),
            )
        )
        echo(
            f"[{fs.info.name}, {fs.plan.label}] membership in client {m.client}'s data from its round-{last} update: "
            f"AUC {rep['auc']:.3f}"
        )
    priv = dict(trained["privacy"])
    privacy = Privacy(
        federation=fs.info.name,
        epsilon=priv.get("epsilon"),
        delta=priv.get("delta"),
        accountant=priv.get("accountant"),
        details={k: v for k, v in priv.items() if k not in ("epsilon", "delta", "accountant")},
    )
    best = strongest_attack(attacks) if attacks else None
    if best:
        emp = audit_privacy(
            res["scores"][best].numpy(),
            res["is_member"].numpy(),
            priv.get("epsilon"),
            priv.get("delta") or 1e-5,
            seed=derive_seed(run.seed, "privacy", fs.key, slug),
        )
        privacy.epsilon_lower_bound = emp["epsilon_lower_bound"]
        privacy.lower_bound_method = "Clopper-Pearson on the strongest membership attack's guesses (95%)"
        privacy.attack = best
        privacy.details |= {k: v for k, v in emp.items() if k != "epsilon_lower_bound"}
    return {"parts": [p.to_dict() for p in parts], "privacy": privacy.to_dict()}


# ----------------------------------------------------------------- the DP guarantee itself


def dp_audit_stage(run: RunFolder, config: AuditConfig, echo) -> dict:  # noqa: ANN001
    """``[audit_dp]``: the canary audit (the same case as ``fedleak audit-dp``) in the run folder's ``audit_dp/``."""
    from fedleak.audit.dpaudit import DPAuditOptions, run_dp_audit

    a = config.audit_dp
    opts = DPAuditOptions(
        dataset=a.dataset or config.federation.dataset,
        model=a.model or config.federation.model,
        defense=a.defense,
        canaries=a.canaries,
        num_canaries=a.num_canaries,
        clients=a.clients,
        rounds=a.rounds,
        seed=derive_seed(run.seed, "audit-dp"),
        device=config.device,
        flower=a.flower,
    )
    res = run_dp_audit(opts, out=run.path / "audit_dp", echo=lambda line: echo(f"[audit-dp] {line}"))
    privacy = res.to_dict()["privacy"]  # the figures, as the audit-dp run folder records them
    extra = {
        "folder": "audit_dp",
        "defense": a.defense,
        "canary_kind": a.canaries,
        "image": "audit_dp/canary_scores.png",
    }
    return DPAudit.from_dict({**privacy, **extra}).to_dict()


# ----------------------------------------------------------------- text


def text_stage(config: AuditConfig, echo) -> dict:  # noqa: ANN001
    """Text recovery from the gradient updates of a text model (the undefended scenario)."""
    from fedleak.audit.text_inversion import run_text_inversion

    t = config.text
    res = run_text_inversion(
        dataset=t.dataset,
        model=t.model,
        attack=t.attack,
        num_records=t.num_records,
        batch_size=t.batch_size,
        iterations=t.iterations,
        seed=config.seed,
        device=config.device,
        echo=lambda s: None,
    )
    summary = res.get("summary", {})
    tok, exact = summary.get("token_accuracy_median"), summary.get("exact_match")
    echo(
        f"[text: {t.dataset}, {t.model}] {res.get('attack', t.attack)}: median token accuracy "
        + ("n/a" if tok is None else f"{tok:.2f}")
        + ("" if exact is None else f", {exact:.0%} of the sequences exactly")
    )
    return TextEntry(
        update="sent",
        attack=str(res.get("attack", t.attack)),
        dataset=t.dataset,
        model=t.model,
        targets=res.get("targets", []),
        summary=summary,
    ).to_dict()


__all__ = [
    "choose_attacks",
    "inversion_stage",
    "load_update",
    "membership_stage",
    "save_update",
    "scenario_slug",
    "text_stage",
    "train_stage",
]
