"""One gradient-inversion experiment: data -> model (untrained or after T FedAvg rounds) -> one client update
per group of B chosen images (through the configured defenses and threat model) -> the attack, all updates
at once -> PSNR / SSIM / label accuracy -> ``results.json`` and ``reconstructions.png``.

    >>> quiet = lambda s: None
    >>> r = run_inversion(dataset="digits", model="mlp", attack="analytic", indices=[0, 1], echo=quiet)
    >>> r["summary"]["psnr_median"] > 100, r["summary"]["label_accuracy"]
    (True, 1.0)
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fedleak.audit.inversion_case import attack_and_score, dataset_mean_image
from fedleak.errors import FedleakInputError
from fedleak.progress import progress_bar
from fedleak.report.figures import reconstruction_png
from fedleak.results import SCHEMA_VERSION
from fedleak.runio import atomic_write_bytes, atomic_write_json

FEDAVG_ATTACKS = ("fedavg",)
DEFAULT_LOCAL_STEPS = 5


def choose_positions(n: int, indices: Sequence[int] | None, num_images: int | None, seed: int) -> list[int]:
    """The records attacked: the given dataset indices, or a seeded sample of ``num_images``."""
    import torch

    if indices is not None:
        bad = [i for i in indices if not 0 <= i < n]
        if bad:
            raise FedleakInputError(f"--indices: {bad[0]} is out of range (the dataset has {n} records, 0..{n - 1})")
        if len(set(indices)) != len(indices):
            raise FedleakInputError("--indices: each index at most once")
        return list(indices)
    if num_images is not None and num_images < 1:
        raise FedleakInputError(f"--num-images {num_images}: attack at least one record")
    count = num_images or 1
    if not 1 <= count <= n:
        raise FedleakInputError(f"--num-images {count}: choose between 1 and {n}")
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:count].tolist()


def group_positions(positions: list[int], batch_size: int, noun: str = "images") -> list[list[int]]:
    """The chosen records grouped into updates of ``batch_size`` each, in order; a count that does not split
    is bad input."""
    if batch_size < 1:
        raise FedleakInputError(f"--batch-size {batch_size}: must be at least 1")
    if batch_size > len(positions):
        raise FedleakInputError(
            f"--batch-size {batch_size} is larger than the {len(positions)} {noun} given; "
            "give more --indices / --num-images or a smaller --batch-size"
        )
    if len(positions) % batch_size:
        raise FedleakInputError(
            f"{len(positions)} {noun} do not split into updates of --batch-size {batch_size}; "
            "give a multiple of the batch size"
        )
    return [positions[i : i + batch_size] for i in range(0, len(positions), batch_size)]


def _pretrain(net, data, exclude: list[int], rounds: int, seed: int, echo) -> None:  # noqa: ANN001
    """T FedAvg rounds (10 clients, batch 32, lr 0.1) on up to 5000 seeded records that are not targets."""
    import torch

    from fedleak.fl import FedConfig, Federation

    rest = sorted(set(range(len(data))) - set(exclude))
    pick = torch.tensor(rest)[torch.randperm(len(rest), generator=torch.Generator().manual_seed(seed + 1))[:5000]]
    train, test = data.subset(pick.sort().values).split(0.2, seed=seed)
    fed = Federation(net, train, test, FedConfig(clients=10, rounds=rounds, seed=seed))
    for r in fed.run(keep_updates=False):
        echo(f"pre-training round {r.round}/{rounds}: test accuracy {r.test_accuracy:.3f}")


IMAGE_PRIOR_MODES = ("auto", "off")
PRIOR_ATTACKS = ("dlg", "idlg")  # the attacks whose prior weight was measured (l2 distance, L-BFGS); and fedavg where
# it runs that engine (families.fedavg_engine)
PRIOR_RECORDS = 20_000  # public records the Gaussian is fitted on (3,072 numbers per CIFAR-10 image: > 6x as many)


def _image_prior(data, rest: Sequence[int], attack: str, model: str, bound, seed: int):  # noqa: ANN001, ANN202
    """(the Gaussian image prior for this run or None, the sentence saying why)."""
    import torch

    from fedleak.attacks.inversion.families import fedavg_engine
    from fedleak.attacks.inversion.image_prior import fit_gaussian_prior

    l2_fedavg = attack == "fedavg" and fedavg_engine(model) == "l2"
    if attack not in PRIOR_ATTACKS and not l2_fedavg:
        return None, f"none ({attack} takes no image prior here; {', '.join(PRIOR_ATTACKS)} and fedavg on lenet do)"
    # FedAvg on the L2 engine takes it even where the bound proves nothing: over several local steps the match
    # alone lands on images that are not the client's (DLG's LeNet, CIFAR-10, 4 records, 3 epochs of 2 steps at lr
    # 0.01, the client's own order and labels given: 0 of 4 rebuilt without the prior, 300 or 1,000 steps; 4 of 4
    # with it, 35-44 dB), and a bound that is met still leaves the update's Jacobian ill-conditioned
    if (bound is None or bound.determined) and not l2_fedavg:
        return None, "none (the update is not proven to leave the batch undetermined: the match alone decides)"
    dim = int(torch.tensor(data.spec.shape).prod())
    if len(rest) <= dim:
        return None, f"none ({len(rest)} records not attacked; a Gaussian of {dim} numbers needs more than {dim})"
    gen = torch.Generator().manual_seed(seed + 3)
    pick = torch.tensor(rest)[torch.randperm(len(rest), generator=gen)[:PRIOR_RECORDS]]
    prior = fit_gaussian_prior(data.inputs(pick))
    unseen = (
        f"for the {bound.null_dims} directions of the batch the update leaves unseen"
        if bound is not None and not bound.determined
        else "for a FedAvg update over several local steps, which the match alone does not invert (measured)"
    )
    why = (
        f"Gaussian fitted on {len(pick)} records of the dataset that are not attacked (the attacker holds public "
        f"records of the distribution), {unseen}"
    )
    return prior, why


def run_inversion(
    *,
    dataset: str,
    model: str,
    attack: str = "idlg",
    indices: Sequence[int] | None = None,
    num_images: int | None = None,
    batch_size: int = 1,
    iterations: int | None = None,
    restarts: int | None = None,
    local_steps: int | None = None,
    local_lr: float = 0.1,
    local_epochs: int | None = None,
    local_batch_size: int | None = None,
    trained_rounds: int = 0,
    seed: int = 0,
    device: str = "cpu",
    defenses: Sequence[str] = (),
    grant: str | None = None,
    bins: int | None = None,
    options: dict[str, Any] | None = None,
    image_prior: str = "auto",
    weights: str | Path | None = None,
    out: Path | str | None = None,
    echo: Callable[[str], None] = print,
) -> dict:
    """Run one inversion experiment; returns the ``results.json`` dict (writes the run folder if ``out``).

    ``image_prior``: ``auto`` gives the l2 attacks (dlg, idlg) a Gaussian image prior fitted on up to
    PRIOR_RECORDS records of the dataset that are not attacked (the attacker holds public records of the
    distribution) where the model's structure proves the batch undetermined; ``off`` never."""
    import torch

    from fedleak.attacks.inversion import ATTACKS, PRESETS, imprint_model, with_plan
    from fedleak.attacks.inversion.identifiability import for_update
    from fedleak.data import load
    from fedleak.defenses import plan as defense_plan
    from fedleak.defenses import secure_sum
    from fedleak.device import resolve_device
    from fedleak.fl import ThreatModel, client_update
    from fedleak.models import build

    ATTACKS.get(attack)
    if image_prior not in IMAGE_PRIOR_MODES:
        raise FedleakInputError(f"--image-prior {image_prior!r}: choose {' or '.join(IMAGE_PRIOR_MODES)}")
    if trained_rounds < 0 or (local_steps is not None and local_steps < 1) or not 0 < local_lr < float("inf"):
        raise FedleakInputError("--trained-rounds must be >= 0, --local-steps >= 1 and --local-lr > 0")
    dev = resolve_device(device)
    threat = ThreatModel.from_grants(grant) if grant else ThreatModel()
    dplan = defense_plan(list(defenses))
    data = load(dataset)
    if data.spec.modality != "image":
        raise FedleakInputError(
            f"{dataset} holds {data.spec.modality} records; image inversion needs images (for text use --modality text)"
        )
    positions = choose_positions(len(data), indices, num_images if num_images is not None else batch_size, seed)
    groups = group_positions(positions, batch_size)
    if local_epochs is not None and local_steps is not None:
        raise FedleakInputError("--local-epochs and --local-steps both set; give one (E epochs, or S steps)")
    if (local_epochs is not None and local_epochs < 1) or (local_batch_size is not None and local_batch_size < 1):
        raise FedleakInputError("--local-epochs and --local-batch-size must be >= 1")
    if local_batch_size is not None and local_batch_size > batch_size:
        raise FedleakInputError(
            f"--local-batch-size {local_batch_size} exceeds the {batch_size} records per update (--batch-size)"
        )
    fedavg = attack in FEDAVG_ATTACKS or local_steps is not None or local_epochs is not None
    steps = (local_steps or DEFAULT_LOCAL_STEPS) if fedavg and local_epochs is None else None
    mini = (local_batch_size or batch_size) if fedavg else batch_size
    k = int(dplan.secagg or 1)
    torch.manual_seed(seed)
    net = dplan.prepare(build(model, data.spec, seed=seed, device=dev, weights=weights))
    if trained_rounds:
        _pretrain(net, data, positions, trained_rounds, seed, echo)
    rest = sorted(set(range(len(data))) - set(positions))
    g_other = torch.Generator().manual_seed(seed + 2)
    if attack == "imprint":
        public = torch.tensor(rest)[torch.randperm(len(rest), generator=g_other)[:1000]]
        nbins = bins or max(512, 8 * batch_size * k)
        net = imprint_model(net, data.spec, bins=nbins, public=data.inputs(public), seed=seed)
    others = torch.tensor(rest)[torch.randperm(len(rest), generator=g_other)]
    updates = []
    for gi, group in enumerate(groups):

        def one(recs: Sequence[int], client: int):  # noqa: ANN202
            return client_update(
                net,
                data.subset(recs),
                local_steps=steps,
                local_epochs=local_epochs if fedavg else None,
                batch_size=mini,
                lr=local_lr,
                seed=seed * 1000 + client,
                threat=threat,
                trainer=dplan.trainer,
                transforms=dplan.transforms,
                client=client,
            )

        u = one(group, gi)
        if k > 1:
            extra = [
                one(others[(gi * (k - 1) + j) * batch_size :][:batch_size].tolist(), len(groups) + j)
                for j in range(k - 1)
            ]
            u = secure_sum([u, *extra])
        if attack == "imprint":
            u = with_plan(u, net)
        updates.append(u)
    opts = {
        "iterations": iterations,
        "restarts": restarts,
        "seed": seed,
        "device": str(dev),
        **(options or {}),
    }
    opts = {key: v for key, v in opts.items() if v is not None}
    bound = for_update(updates[0], len(groups[0]) * k)  # what the update can determine (None: not a chain)
    prior, prior_why = None, "off (--image-prior off)"
    if image_prior == "auto":
        prior, prior_why = _image_prior(data, rest, attack, model, bound, seed)
        if prior is not None:
            opts["image_prior"] = prior
    echo(f"image prior: {prior_why}")
    echo(f"attacking {len(updates)} update(s) of {batch_size} image(s) with {attack} ...")
    rest_mean = dataset_mean_image(data.subset(rest[:2000])) if rest else None
    with progress_bar(f"{attack}") as report:
        if attack in PRESETS:  # the optimisation attacks report each iteration
            opts.setdefault("on_progress", report)
        scored = attack_and_score(updates, [data.subset(g) for g in groups], attack, opts, rest_mean, clients=None)
    recs = scored.recs
    seconds_total = scored.summary.seconds_total
    targets = [{k: v for k, v in t.to_dict().items() if k != "client"} for t in scored.targets]
    pairs = [(scored.originals[i], scored.reconstructions[i], t["psnr"]) for i, t in enumerate(targets)]
    psnrs = [t["psnr"] for t in targets]
    with_label = [t for t in targets if t["recovered_label"] is not None]
    summary = {
        "psnr_mean": statistics.fmean(psnrs),
        "psnr_median": statistics.median(psnrs),
        "psnr_min": min(psnrs),
        "ssim_mean": statistics.fmean(t["ssim"] for t in targets),
        "mse_mean": statistics.fmean(t["mse"] for t in targets),
        "label_accuracy": (
            sum(t["label"] == t["recovered_label"] for t in with_label) / len(with_label) if with_label else None
        ),
        "baseline_psnr_median": scored.summary.baseline_psnr_median,
        "rebuilt": scored.summary.rebuilt,
        "rebuilt_fraction": scored.summary.rebuilt / len(targets),
        "recovered_above_50db": sum(p > 50 for p in psnrs) / len(psnrs),
        "seconds_total": seconds_total,
    }
    result = {
        "kind": "inversion",
        "schema_version": SCHEMA_VERSION,
        "attack": attack,
        "model": model,
        "dataset": dataset,
        "seed": seed,
        "batch_size": batch_size,
        "updates": len(updates),
        "iterations": iterations,
        "restarts": restarts,
        "local_steps": (steps or local_epochs * -(-batch_size // mini)) if fedavg else None,  # type: ignore[operator]
        "local_epochs": local_epochs if fedavg else None,
        "local_batch_size": mini if fedavg else None,
        "local_lr": local_lr if fedavg else None,
        "trained_rounds": trained_rounds,
        "device": str(dev),
        "update_kind": updates[0].kind,
        "train_mode": bool(updates[0].train_mode),
        # the BatchNorm prior the attack used: "update" (the buffers a FedAvg client sent), "global" (the trained
        # global model's running statistics) or None (no BatchNorm, switched off, or nothing informative)
        "bn_prior": next((r.extras["bn_prior"] for r in recs if (r.extras or {}).get("bn_prior")), None),
        "identifiability": bound.to_dict() if bound is not None else None,
        # the Gaussian image prior the attack used (fitted on records of the dataset not attacked), or None; why
        "image_prior": None if prior is None else {**prior.to_dict(), "weight": recs[0].extras.get("prior_weight")},
        "image_prior_why": prior_why,
        "notes": list(scored.notes),  # what the attack itself reported (a batch beyond reach, an inconsistency)
        "num_clients": k,
        "threat": {name: getattr(threat, name) for name in threat.__dataclass_fields__},
        "label_method": recs[0].label_method,
        "attack_settings": recs[0].extras.get("settings"),  # ig/fedavg: tv, lr, start and where each came from
        "defense": dplan.label,
        "privacy": dplan.privacy(),
        "targets": targets,
        "summary": summary,
    }
    _echo_table(result, echo)
    for note in scored.notes:
        echo(f"note: {note}")
    if bound is not None and not bound.determined:
        echo(f"note: {bound.sentence()}")
    if out is not None:
        out = Path(out)
        shown = pairs[:32]
        png = reconstruction_png(
            torch.stack([o for o, _, _ in shown]),
            torch.stack([r for _, r, _ in shown]),
            [p for _, _, p in shown],
            rebuilt=[t["rebuilt"] for t in targets[:32]],
        )
        atomic_write_bytes(out / "reconstructions.png", png)
        atomic_write_json(out / "results.json", result)
        echo(f"wrote {out / 'results.json'} and {out / 'reconstructions.png'}")
    return result


def _echo_table(result: dict, echo: Callable[[str], None]) -> None:
    rows = result["targets"]
    show = rows if len(rows) <= 16 else rows[:16]
    echo(f"{'index':>7} {'label':>5} {'recov':>5} {'PSNR':>8} {'blank':>8} {'SSIM':>6}  rebuilt")
    for t in show:
        rl = "-" if t["recovered_label"] is None else str(t["recovered_label"])
        mark = "yes" if t["rebuilt"] else "no"
        row = f"{t['index']:>7} {t['label']:>5} {rl:>5} {t['psnr']:>8.2f} {t['baseline_psnr']:>8.2f}"
        echo(f"{row} {t['ssim']:>6.3f}  {mark}")
    if len(rows) > len(show):
        echo(f"... {len(rows) - len(show)} more")
    s = result["summary"]
    la = "n/a" if s["label_accuracy"] is None else f"{s['label_accuracy']:.2f}"
    echo(
        f"rebuilt {s['rebuilt']} of {len(rows)} (PSNR at least 10 dB above a blank image and SSIM >= 0.5); "
        f"PSNR median {s['psnr_median']:.2f} dB (blank image {s['baseline_psnr_median']:.2f}), mean "
        f"{s['psnr_mean']:.2f}, SSIM mean {s['ssim_mean']:.3f}, labels {la}, {s['seconds_total']:.1f} s"
    )
