"""One membership-inference experiment: data -> split (members, non-members, population) -> target trained as
users train -> attacks -> ``results.json`` (membership keys of DESIGN.md) and ``roc.png``.

    >>> from fedleak.audit.mia import run_mia
    >>> quiet = lambda line: None
    >>> r = run_mia(dataset="digits", model="mlp:16", attack="loss", members=100, epochs=5, echo=quiet)
    >>> r["kind"], r["attack"], 0.0 <= r["auc"] <= 1.0
    ('membership', 'loss', True)

Lower level, for targets trained elsewhere (e.g. the final global model of a :class:`fedleak.fl.Federation`):
:func:`attack_target` (a model and its members / non-members / population) and :func:`attack_update` (one
client's :class:`fedleak.fl.ClientUpdate` and records in / out of that client's data).
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fedleak.data import Dataset, load
from fedleak.errors import FedleakInputError
from fedleak.progress import OnProgress
from fedleak.runio import atomic_write_bytes, atomic_write_json

HEADLINE_ORDER = ("lira", "rmia", "lira-offline", "rmia-offline", "shokri")
DEFAULT_ALL = (
    "loss",
    "confidence",
    "entropy",
    "mentropy",
    "loss-class",
    "confidence-class",
    "entropy-class",
    "mentropy-class",
    "shokri",
    "lira",
    "lira-offline",
    "rmia",
    "rmia-offline",
)


def split_membership(
    data: Dataset, members: int, seed: int = 0, population: int = 0
) -> tuple[Dataset, Dataset, Dataset]:
    """A seeded split into ``members`` target-training records, as many held-out non-members, and the rest
    (at most ``population`` of them when > 0) as the attacker's population."""
    n = len(data)
    if members < 1:
        raise FedleakInputError(f"--members {members}: must be at least 1")
    if 2 * members + 2 > n:
        raise FedleakInputError(
            f"--members {members}: {data.spec.name} has {n} records, too few for {members} members, as many "
            f"non-members and a population; use --members {max(1, (n - 2) // 2 - (n - 2) // 8)} or less"
        )
    import torch

    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7_919 + 11))
    return (
        data.subset(perm[:members]),
        data.subset(perm[members : 2 * members]),
        data.subset(perm[2 * members :] if population <= 0 else perm[2 * members : 2 * members + population]),
    )


def resolve_attacks(attack: str | Sequence[str]) -> list[str]:
    """'all', one name, or a comma list -> registered attack names (checked)."""
    from fedleak.attacks.membership import ATTACKS

    names = [a.strip() for a in (attack.split(",") if isinstance(attack, str) else attack) if a.strip()]
    if not names:
        raise FedleakInputError("--attack: name an attack or 'all'")
    if names == ["all"]:
        return [a for a in DEFAULT_ALL if a in ATTACKS] + [a for a in ATTACKS.names() if a not in DEFAULT_ALL]
    for a in names:
        ATTACKS.get(a)
    return names


def attack_target(
    target: Any,
    members: Dataset,
    nonmembers: Dataset,
    population: Dataset | None,
    attacks: Sequence[str],
    *,
    model_spec: str | None = None,
    train_spec: Any = None,
    references: int | Any = 16,
    shadow_data: str = "population",
    seed: int = 0,
    device: str | None = None,
    checkpoint_dir: str | Path | None = None,
    vectorised: bool = True,
    options: dict[str, dict] | None = None,
    echo: Callable[[str], None] = print,
    reference_trainer: Callable | None = None,
    on_progress: OnProgress | None = None,
) -> dict[str, Any]:
    """Run ``attacks`` on an already-trained ``target``: returns {"attacks": {name: roc_report + seconds},
    "references": {...}, "exposed": [...], "exposed_threshold": {...}} (see :func:`exposed_records`).
    Reference/shadow models train like ``train_spec`` (vectorised, checkpointed)."""
    import torch

    from fedleak.attacks.membership import MembershipContext, Records, membership_scores
    from fedleak.attacks.membership.registry import ATTACKS
    from fedleak.fl import TrainSpec
    from fedleak.metrics import roc_report

    needs = {ATTACKS.get(a).references for a in attacks}
    if needs & {"online", "offline", "shadow"}:
        k = references if isinstance(references, int) else references.count
        if k < 2:
            raise FedleakInputError(
                f"--references {k}: {', '.join(a for a in attacks if ATTACKS.get(a).references)} need two or"
                " more reference models (IN/OUT pairs); use --references 16"
            )
    records = Records.of(members).cat(Records.of(nonmembers))
    is_member = torch.cat([torch.ones(len(members), dtype=torch.bool), torch.zeros(len(nonmembers), dtype=torch.bool)])

    def progress(label: str, done: int, total: int) -> None:
        if on_progress is not None:  # a bar with ETA on a terminal (fedleak.progress)
            on_progress(done, total, f"{label}: models trained")
        else:
            echo(f"  {label}: {done}/{total} models trained")

    ctx = MembershipContext(
        target,
        records,
        Records.of(population) if population is not None and len(population) else None,
        references,
        model_spec,
        members.spec,
        train_spec or TrainSpec(),
        seed,
        device,
        checkpoint_dir,
        vectorised,
        on_progress=progress,
    )
    if reference_trainer is not None:
        ctx.reference_trainer = reference_trainer
    out: dict[str, Any] = {}
    scored: dict[str, Any] = {}  # each attack's scores, for the privacy block's epsilon lower bound
    for a in attacks:
        opts = dict((options or {}).get(a, {}))
        if a == "shokri":
            opts.setdefault("shadow_data", shadow_data)
        t0 = time.perf_counter()
        scores = membership_scores(target, None, a, context=ctx, **opts)
        seconds = time.perf_counter() - t0  # includes the reference / shadow models this attack trained first
        rep = roc_report(scores, is_member)
        rep["seconds"] = seconds
        if ATTACKS.get(a).references:
            rep["reference_models"] = int(opts.get("shadows") or ctx.reference_count(a, least=1))
        out[a] = rep
        scored[a] = scores
        t1 = rep["tpr_at_fpr"]["0.01"]
        t1 = "not resolvable" if t1 is None else f"{t1:.3f}"
        echo(f"  {a:<16} AUC {rep['auc']:.3f}  TPR@1%FPR {t1}  ({seconds:.1f} s)")
    refs_info: dict[str, Any] = {"vectorised": vectorised}
    if "refs" in ctx._cache:
        refs = ctx._cache["refs"][0]
        refs_info.update(
            count=refs.count,
            seconds=refs.seconds,
            models_per_second=refs.count / refs.seconds if refs.seconds else None,
        )
    strongest = strongest_attack(out)
    ids = records.ids if records.ids is not None else torch.arange(len(records))
    exposed, threshold = exposed_records(scored[strongest], is_member, ids, records.y, strongest)
    return {
        "attacks": out,
        "references": refs_info,
        "scores": scored,
        "is_member": is_member,
        "exposed": exposed,  # the members most exposed by the strongest attack (dataset index, label, score)
        "exposed_threshold": threshold,
    }


def attack_update(update: Any, members: Dataset, nonmembers: Dataset, signal: str | None = None) -> dict[str, Any]:
    """Membership in one client's data from the update it sent (the server's view): roc_report + signal."""
    import torch

    from fedleak.attacks.membership import update_scores
    from fedleak.metrics import roc_report

    xm, ym = members.tensors()
    xn, yn = nonmembers.tensors()
    t0 = time.perf_counter()
    scores = update_scores(update, torch.cat([xm, xn]), torch.cat([ym, yn]), signal)
    rep = roc_report(scores, torch.arange(len(xm) + len(xn)) < len(xm))
    rep["signal"] = signal or ("loss-drop" if update.kind == "delta" else "gradient-alignment")
    rep["seconds"] = time.perf_counter() - t0
    return rep


EXPOSED_LEVELS = (0.001, 0.01, 0.1)  # the lowest FPR the non-members resolve sets the exposure threshold


def attack_federation(
    rounds: Sequence[Sequence[Any]],
    client_data: dict[int, Dataset],
    nonmembers: Dataset,
    final_model: Any,
    *,
    calibration: str = "others",
    signal: str | None = None,
) -> dict[str, Any]:
    """Membership in each client's data, per client, from every round's updates the server kept (``rounds[r]``:
    round r's ClientUpdates) beside the loss threshold on the final global model, on the same records (the
    client's as members, ``nonmembers`` that no client held): {"clients": {k: {"federation": roc_report,
    "final_model": roc_report}}, "calibration", "signal", "rounds"}."""
    import torch

    from fedleak.attacks.membership import federation_scores, membership_scores
    from fedleak.metrics import roc_report

    xn, yn = nonmembers.tensors()
    per: dict[str, Any] = {}
    for k, mem in client_data.items():
        xm, ym = mem.tensors()
        x, y = torch.cat([xm, xn]), torch.cat([ym, yn])
        is_member = torch.arange(len(x)) < len(xm)
        t0 = time.perf_counter()
        fed = roc_report(federation_scores(rounds, k, x, y, calibration=calibration, signal=signal), is_member)
        fed["seconds"] = time.perf_counter() - t0
        final = roc_report(membership_scores(final_model, (x, y), "loss"), is_member)
        per[str(k)] = {"federation": fed, "final_model": final}
    return {"clients": per, "calibration": calibration, "signal": signal or "auto", "rounds": len(rounds)}


def strongest_attack(attacks: dict[str, dict]) -> str:
    """The attack with the highest TPR at the lowest FPR level at which every attack's TPR is resolvable
    (None is not comparable: fall back to the next level), ties by AUC; by AUC alone when no level is."""
    for level in ("0.001", "0.01", "0.1"):
        rates = {a: r["tpr_at_fpr"].get(level) for a, r in attacks.items()}
        if all(v is not None for v in rates.values()):
            return max(attacks, key=lambda a: (rates[a], attacks[a]["auc"]))
    return max(attacks, key=lambda a: attacks[a]["auc"])


def exposed_records(
    scores: Any, is_member: Any, ids: Any, labels: Any, attack: str, top: int = 10
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The members most exposed by ``attack``: those scoring above the threshold that flags at most a fraction
    ``fpr`` of the non-members (the lowest of EXPOSED_LEVELS with ``fpr * non-members >= 1``), highest first,
    at most ``top``. Returns (records, threshold): each record names its dataset ``index`` and ``label``."""
    import torch

    s = torch.as_tensor(scores, dtype=torch.float64).cpu()
    m = torch.as_tensor(is_member, dtype=torch.bool).cpu()
    non = s[~m].sort(descending=True).values
    level = next((lv for lv in EXPOSED_LEVELS if lv * len(non) >= 1), None)
    if level is None or not m.any():
        return [], {"attack": attack, "fpr": None, "score": None, "members_above": 0}
    allowed = int(level * len(non) + 1e-9)  # non-members allowed above the threshold
    thr = float(non[allowed]) if allowed < len(non) else float("-inf")
    pos = torch.nonzero(m & (s > thr)).flatten()
    pos = pos[s[pos].argsort(descending=True)]
    ids, labels = torch.as_tensor(ids).cpu(), torch.as_tensor(labels).cpu()
    recs = [
        {"index": int(ids[i]), "label": int(labels[i]), "score": float(s[i]), "attack": attack, "fpr": level}
        for i in pos[:top].tolist()
    ]
    fpr_real = int((non > thr).sum()) / len(non)
    return recs, {"attack": attack, "fpr": level, "fpr_measured": fpr_real, "score": thr, "members_above": len(pos)}


def plot_roc(attacks: dict[str, dict], title: str = "") -> bytes:
    """A log-log ROC plot of every attack (PNG bytes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5), dpi=110)
    floor = 1e-4
    colors = plt.get_cmap("tab20").colors
    for i, (name, rep) in enumerate(attacks.items()):
        fpr = [max(v, floor) for v in rep["curve"]["fpr"]]
        tpr = [max(v, floor) for v in rep["curve"]["tpr"]]
        t1 = rep["tpr_at_fpr"].get("0.01")
        label = f"{name} (AUC {rep['auc']:.3f}, " + ("n/r" if t1 is None else f"{t1:.3f}") + "@1%)"
        ax.step(fpr, tpr, where="post", color=colors[(2 * i) % 20 + (i // 10) % 2], label=label)
    ax.plot([floor, 1], [floor, 1], "k:", lw=0.8, label="chance")
    ax.set(
        xscale="log",
        yscale="log",
        xlim=(floor, 1),
        ylim=(floor, 1),
        xlabel="false positive rate",
        ylabel="true positive rate",
        title=title or "membership inference",
    )
    ax.legend(fontsize=6, loc="lower right")
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _table(attacks: dict[str, dict]) -> str:
    cols = f"{'AUC [95% CI]':>20} {'TPR@0.1%':>9} {'TPR@1%':>7} {'TPR@10%':>8} {'bal.acc':>8} {'seconds':>8}"
    head = f"{'attack':<16} {cols}"
    rows = [head, "-" * len(head)]

    def rate(v: float | None, width: int) -> str:
        return f"{'n/r':>{width}}" if v is None else f"{v:>{width}.3f}"

    for name, r in attacks.items():
        t, (lo, hi) = r["tpr_at_fpr"], r["auc_ci"]
        auc = f"{r['auc']:.3f} [{lo:.3f}, {hi:.3f}]"
        rows.append(
            f"{name:<16} {auc:>20} {rate(t['0.001'], 9)} {rate(t['0.01'], 7)} {rate(t['0.1'], 8)} "
            f"{r['balanced_accuracy']:>8.3f} {r['seconds']:>8.1f}"
        )
    c = next(iter(attacks.values()))["counts"] if attacks else {}
    if c:
        rows.append(
            f"{c['members']} members, {c['non_members']} non-members; n/r: not resolvable (an FPR below "
            f"1/{c['non_members']})"
        )
    return "\n".join(rows)


REFERENCES_FROM_SEEDS = (
    "seeded random initialisations, not the target's --weights: an attacker who knows the starting weights and "
    "starts its reference models from them may do better than these figures"
)


def _file_sha256(path: str | Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def _target_digest(dataset: str, model: str, train_spec: Any, members: Dataset, seed: int, defense: str) -> str:
    import hashlib
    import json
    from dataclasses import asdict

    h = hashlib.sha256(json.dumps([dataset, model, asdict(train_spec), seed, defense]).encode())
    h.update(members.indices.numpy().tobytes())
    return h.hexdigest()[:16]


def run_mia(
    *,
    dataset: str,
    model: str = "mlp",
    attack: str | Sequence[str] = "all",
    members: int = 500,
    population: int = 0,
    references: int = 16,
    shadow_data: str = "population",
    epochs: int = 50,
    lr: float = 0.1,
    batch_size: int = 64,
    momentum: float = 0.9,
    seed: int = 0,
    device: str = "cpu",
    defense: Sequence[str] | None = None,
    vectorised: bool = True,
    out: Path | str | None = None,
    echo: Callable[[str], None] = print,
    reference_trainer: Callable | None = None,
    on_progress: OnProgress | None = None,
    weights: str | Path | None = None,
) -> dict[str, Any]:
    """The whole experiment; with ``out`` writes results.json, roc.png, target.safetensors and the reference
    models (``references/``, resumed on a rerun with the same options). ``weights``: a safetensors file the
    target starts its training from instead of its seeded initialisation (shapes checked); the reference and
    shadow models keep their own seeded initialisations, and results.json says so."""
    from fedleak.attacks.membership import SHADOW_DATA
    from fedleak.defenses import plan as defense_plan
    from fedleak.defenses import privacy_block
    from fedleak.device import resolve_device

    t_start = time.perf_counter()
    names = resolve_attacks(attack)
    SHADOW_DATA.get(shadow_data)
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise FedleakInputError("--epochs and --batch-size must be >= 1 and --lr > 0")
    from fedleak.attacks.membership import ATTACKS

    paired = [a for a in names if ATTACKS.get(a).references]
    if paired and references < 2:
        raise FedleakInputError(
            f"--references {references}: {', '.join(paired)} need two or more reference models"
            " (IN/OUT pairs); use --references 16"
        )
    dev = resolve_device(device)
    plan = defense_plan(list(defense or []))
    if plan.transforms or plan.aggregator is not None or plan.secagg:
        raise FedleakInputError(
            f"--defense {plan.label}: fedleak mia trains one model centrally, so only defenses of how it"
            " trains (dp-sgd) apply; use fedleak audit for defenses of what clients send"
        )
    data = load(dataset)
    if data.labels.dim() != 1 or data.spec.modality == "text":
        raise FedleakInputError(f"{dataset}: membership inference needs a labelled image or table dataset")
    if population < 0:
        raise FedleakInputError(f"--population {population}: give 0 (all the rest) or a positive count")
    mem, non, pop = split_membership(data, members, seed, population)

    import torch

    from fedleak.fl import SGDTrainer, TrainSpec, evaluate
    from fedleak.models import build, load_weights, save_weights

    train_spec = TrainSpec(epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum)
    torch.manual_seed(seed)
    target = build(model, data.spec, seed=seed, device=dev, weights=weights)
    target = plan.prepare(target) if hasattr(plan, "prepare") else target
    if hasattr(plan, "bind"):
        plan.bind(rounds=1)
    trainer = plan.trainer or SGDTrainer()
    outp = Path(out) if out is not None else None
    start = model if weights is None else f"{model}@{_file_sha256(weights)}"  # another start, another target
    digest = _target_digest(dataset, start, train_spec, mem, seed, plan.label)
    ckpt = outp / f"target-{digest}.safetensors" if outp is not None else None
    t0 = time.perf_counter()
    xm, ym = mem.tensors()
    if ckpt is not None and ckpt.exists() and plan.trainer is None:
        load_weights(target, ckpt)
        echo(f"target: loaded {ckpt.name} (same options as before)")
    else:
        target.train()
        trainer.train(target, xm.to(dev), ym.to(dev), train_spec, torch.Generator().manual_seed(seed))
        if ckpt is not None and plan.trainer is None:
            save_weights(target, ckpt)
    target.eval()
    target_seconds = time.perf_counter() - t0
    train_acc, train_loss = evaluate(target, xm, ym)
    test_acc, test_loss = evaluate(target, *non.tensors())
    echo(
        f"target {model} on {len(mem)} {dataset} records: train accuracy {train_acc:.3f}, test accuracy "
        f"{test_acc:.3f} ({target_seconds:.1f} s); {len(non)} non-members, {len(pop)} population records"
    )

    found = attack_target(
        target,
        mem,
        non,
        pop,
        names,
        model_spec=model,
        train_spec=train_spec,
        references=references,
        shadow_data=shadow_data,
        seed=seed,
        device=dev,
        checkpoint_dir=outp / "references" if outp else None,
        vectorised=vectorised,
        echo=echo,
        reference_trainer=reference_trainer,
        on_progress=on_progress,
    )
    attacks = found["attacks"]
    headline = next((a for a in HEADLINE_ORDER if a in attacks), None) or max(attacks, key=lambda a: attacks[a]["auc"])
    head = attacks[headline]
    result: dict[str, Any] = {
        "kind": "membership",
        "attack": headline if len(names) == 1 else ("all" if attack == "all" else ",".join(names)),
        "headline": headline,
        "model": model,
        "dataset": dataset,
        "seed": seed,
        "auc": head["auc"],
        "tpr_at_fpr": head["tpr_at_fpr"],
        "balanced_accuracy": head["balanced_accuracy"],
        "curve": head["curve"],
        "target": {
            "train_accuracy": train_acc,
            "test_accuracy": test_acc,
            "train_loss": train_loss,
            "test_loss": test_loss,
            "seconds": target_seconds,
        },
        "split": {"members": len(mem), "nonmembers": len(non), "population": len(pop)},
        "config": {
            "population": population,
            "epochs": epochs,
            "lr": lr,
            "batch_size": batch_size,
            "momentum": momentum,
            "references": references,
            "shadow_data": shadow_data,
            "device": str(dev),
            "vectorised": vectorised,
            "weights": str(weights) if weights is not None else None,
        },
        "defense": plan.label,
        # the accountant's epsilon beside the lower bound the headline attack's scores prove
        "privacy": privacy_block(plan, found["scores"][headline], found["is_member"], seed=seed),
        "references": found["references"] | ({"initialisation": REFERENCES_FROM_SEEDS} if weights and paired else {}),
        "seconds_total": 0.0,
    }
    result["exposed"], result["exposed_threshold"] = found["exposed"], found["exposed_threshold"]
    if len(names) > 1:
        result["attacks"] = attacks
    else:
        result["seconds"] = head["seconds"]
    result["seconds_total"] = time.perf_counter() - t_start
    echo(_table(attacks))
    if weights is not None and paired:
        echo(f"note: the target started from {weights}; the reference models from {REFERENCES_FROM_SEEDS}")
    if outp is not None:
        atomic_write_bytes(outp / "roc.png", plot_roc(attacks, f"{model} on {dataset}, {len(mem)} members"))
        atomic_write_json(outp / "results.json", result)
        echo(f"wrote {outp / 'results.json'} and {outp / 'roc.png'}")
    return result
