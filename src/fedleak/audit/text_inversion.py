"""One text-inversion experiment: a text dataset -> a text model -> one client update per group of B chosen
records (through the configured defenses) -> a text attack on all updates at once -> token accuracy, exact
match, ROUGE, token-set recovery -> ``results.json`` and ``reconstructions.md`` (true and recovered text side
by side). ``fedleak invert --modality text`` calls :func:`run_text_inversion`.

Records are chosen as the image side chooses them (:func:`fedleak.audit.invert.choose_positions`): the given
``indices``, else a seeded sample of ``num_images``. ``local_steps`` makes the client a FedAvg client (S local
SGD steps of its B records at ``local_lr``); the attack then replays those steps.

    >>> quiet = lambda s: None
    >>> r = run_text_inversion(dataset="demo-records", model="transformer:32,1", attack="tokens",
    ...                        indices=[0, 1], echo=quiet)
    >>> s = r["summary"]
    >>> s["token_set_exact_rate"], r["targets"][1]["token_set_recall"], s["label_accuracy"]
    (1.0, 1.0, 1.0)
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from fedleak.errors import FedleakInputError
from fedleak.runio import atomic_write_json, atomic_write_text


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def side_by_side(targets: list[dict], title: str = "") -> str:
    """A Markdown table of true and recovered text, one row per target.

    >>> print(side_by_side([{"index": 3, "label": 0, "text": "a b", "recovered_text": "a c",
    ...                      "token_accuracy": 0.5}]))
    | index | label | token acc. | true text | recovered text |
    |---:|---:|---:|---|---|
    | 3 | 0 | 0.50 | a b | a c |
    """

    def cell(s: object) -> str:
        return str(s).replace("|", "\\|").replace("\n", " ")

    lines = [f"# {title}", ""] if title else []
    lines += ["| index | label | token acc. | true text | recovered text |", "|---:|---:|---:|---|---|"]
    for t in targets:
        acc = "-" if t.get("token_accuracy") is None else f"{t['token_accuracy']:.2f}"
        lines.append(f"| {t['index']} | {t['label']} | {acc} | {cell(t['text'])} | {cell(t['recovered_text'])} |")
    return "\n".join(lines)


def run_text_inversion(
    *,
    dataset: str,
    model: str,
    attack: str = "tag",
    indices: Sequence[int] | None = None,
    num_images: int | None = None,
    num_records: int | None = None,
    lora_rank: int | None = None,
    weights: str | Path | None = None,
    batch_size: int = 1,
    iterations: int | None = None,
    local_steps: int | None = None,
    local_lr: float = 0.1,
    seed: int = 0,
    device: str = "cpu",
    defenses: Sequence[str] = (),
    options: dict | None = None,
    out: Path | str | None = None,
    echo: Callable[[str], None] = print,
) -> dict:
    """Run one text-inversion experiment; returns the ``results.json`` dict (and writes the run folder to
    ``out`` when given).

    ``options`` go to the attack (for ``tag``: :class:`fedleak.attacks.inversion.text.TagOptions` fields).
    ``num_records`` is ``num_images`` under its text name; ``attack="auto"`` picks ``dager`` for a decoder LM
    (a model with next-token targets) and ``tag`` for a classifier; ``lora_rank`` R makes the client a LoRA
    fine-tuning client (a ``gpt`` with rank-R adapters on its Q/K/V projections, sending only the adapters).
    """
    from fedleak.attacks.inversion.text import TEXT_ATTACKS, invert_text
    from fedleak.attacks.inversion.tokens import set_scores
    from fedleak.audit.invert import choose_positions, group_positions
    from fedleak.data import load
    from fedleak.defenses import plan as defense_plan
    from fedleak.device import resolve_device
    from fedleak.fl import client_update
    from fedleak.metrics.text import match_sequences, text_scores
    from fedleak.models import build

    if attack != "auto":
        TEXT_ATTACKS.get(attack)
    if num_records is not None:
        num_images = num_records
    if lora_rank is not None:
        if lora_rank < 1 or not model.startswith("gpt"):
            raise FedleakInputError(f"--lora-rank {lora_rank}: LoRA clients need --model gpt[...] and a rank >= 1")
        model = f"{model}{',' if ':' in model else ':'}lora={lora_rank}"
    if (local_steps is not None and local_steps < 1) or local_lr <= 0:
        raise FedleakInputError("--local-steps must be >= 1 and --local-lr > 0")
    if iterations is not None and iterations < 0:
        raise FedleakInputError(f"--iterations {iterations}: must be 0 or more")
    dev = resolve_device(device)
    dplan = defense_plan(list(defenses))
    if getattr(dplan, "secagg", None) and int(dplan.secagg) > 1:
        raise FedleakInputError("text inversion does not support secure aggregation yet; drop --defense secagg")
    data = load(dataset)
    if data.spec.modality != "text":
        raise FedleakInputError(
            f"{dataset} holds {data.spec.modality} records; --modality text needs a text dataset "
            "(demo-records or text:PATH)"
        )
    positions = choose_positions(len(data), indices, num_images if num_images else batch_size, seed)
    groups = group_positions(positions, batch_size, "records")
    tok = data.extras["tokenizer"]
    net = build(model, data.spec, seed=seed, device=dev, weights=weights)
    if attack == "auto":
        attack = "dager" if callable(getattr(net, "training_targets", None)) else "tag"
    prepare = getattr(dplan, "prepare", None)
    if prepare is not None:
        net = prepare(net)
    updates = [
        client_update(
            net,
            data.subset(group),
            local_steps=local_steps,
            batch_size=batch_size,
            lr=local_lr,
            seed=seed * 1000 + gi,
            trainer=dplan.trainer,
            transforms=dplan.transforms,
            client=gi,
        )
        for gi, group in enumerate(groups)
    ]
    opts = {"iterations": iterations, "seed": seed, **(options or {})} if attack != "tokens" else {}
    echo(f"attacking {len(updates)} update(s) of {batch_size} record(s) with {attack} ...")
    t0 = time.perf_counter()
    recs = invert_text(updates, attack, **{k: v for k, v in opts.items() if v is not None})
    seconds_total = time.perf_counter() - t0
    targets, set_exact = [], []
    for group, rec in zip(groups, recs, strict=True):
        true = data.raw[group]
        set_exact.append(set_scores(true, rec.token_set, tok.pad_id)["exact"])
        bag = tok.join(tok.pieces(rec.token_set))
        if rec.tokens is not None:
            perm = match_sequences(list(true), list(rec.tokens), tok.pad_id)
        else:
            perm = list(range(len(group)))
        for j, pos in enumerate(group):
            row = {
                "index": int(data.indices[pos]),
                "label": int(data.labels[pos]),
                "recovered_label": None if rec.labels is None else int(rec.labels[perm[j]]),
                "text": tok.decode(true[j]),
                "recovered_text": bag if rec.tokens is None else tok.decode(rec.tokens[perm[j]]),
                "token_set_recall": set_scores(true[j], rec.token_set, tok.pad_id)["recall"],
            }
            if rec.tokens is not None:
                row.update(text_scores(true[j], rec.tokens[perm[j]], tok.pad_id))
                row["gradient_distance"] = rec.distance if rec.distance == rec.distance else None
            else:
                row.update(dict.fromkeys(("token_accuracy", "exact_match", "rouge_1", "rouge_2", "rouge_l")))
            row["seconds"] = seconds_total / len(positions)
            targets.append(row)
    scored = [t for t in targets if t["token_accuracy"] is not None]
    labelled = [t for t in targets if t["recovered_label"] is not None]
    summary = {
        "token_accuracy_median": statistics.median(t["token_accuracy"] for t in scored) if scored else None,
        "token_accuracy_mean": _mean([t["token_accuracy"] for t in scored]),
        "token_accuracy_min": min((t["token_accuracy"] for t in scored), default=None),
        "exact_match_rate": _mean([t["exact_match"] for t in scored]),
        "exact_match": _mean([t["exact_match"] for t in scored]),  # fraction of sequences recovered exactly
        "rouge_1_mean": _mean([t["rouge_1"] for t in scored]),
        "rouge_2_mean": _mean([t["rouge_2"] for t in scored]),
        "rouge_l_mean": _mean([t["rouge_l"] for t in scored]),
        "token_set_exact_rate": statistics.fmean(set_exact),
        "label_accuracy": _mean([float(t["label"] == t["recovered_label"]) for t in labelled]),
        "seconds_total": seconds_total,
    }
    result = {
        "kind": "inversion",
        "modality": "text",
        "attack": attack,
        "model": model,
        "dataset": dataset,
        "seed": seed,
        "batch_size": batch_size,
        "updates": len(updates),
        "iterations": iterations,
        "local_steps": local_steps,
        "local_lr": local_lr if local_steps is not None else None,
        "device": str(dev),
        "update_kind": updates[0].kind,
        "sequence_length": int(data.spec.shape[0]),
        "vocab_size": int(data.spec.vocab_size or 0),
        "tokenizer": tok.kind,
        "labels_recovered": any(r.labels_recovered for r in recs),
        "lora_rank": lora_rank,
        "weights": str(weights) if weights is not None else None,  # the attacked model (None: seeded init)
        "attack_details": [r.extras for r in recs] if attack == "dager" else None,
        "defense": dplan.label,
        "privacy": dplan.privacy(),
        "targets": targets,
        "summary": summary,
    }
    _echo_table(result, echo)
    for i, x in enumerate(result["attack_details"] or []):
        if x["span_vacuous"] or x["stopped_at_position"] is not None:
            echo(
                f"dager, update {i}: the attack failed - span ranks {x['rank_1']}/{x['rank_2']} "
                f"{'fill their whole space (more inputs than the rank)' if x['span_vacuous'] else 'do not separate'}"
                f", stopped at position {x['stopped_at_position']}"
            )
    if out is not None:
        out = Path(out)
        table = side_by_side(targets, f"{attack} on {model}, {dataset}, batch {batch_size}")
        atomic_write_text(out / "reconstructions.md", table + "\n")
        atomic_write_json(out / "results.json", result)
        echo(f"wrote {out / 'results.json'} and {out / 'reconstructions.md'}")
    return result


def _echo_table(result: dict, echo: Callable[[str], None]) -> None:
    rows = result["targets"]
    show = rows[:16]
    for t in show:
        acc = "  -  " if t["token_accuracy"] is None else f"{t['token_accuracy']:.3f}"
        echo(f"{t['index']:>6} {acc}  {t['text'][:60]}")
        echo(f"{'':>6} {'':5}  {t['recovered_text'][:60]}")
    if len(rows) > len(show):
        echo(f"... {len(rows) - len(show)} more")
    s = result["summary"]
    if s["token_accuracy_median"] is not None:
        echo(
            f"token accuracy median {s['token_accuracy_median']:.3f}, exact {s['exact_match_rate']:.2f}, "
            f"ROUGE-L {s['rouge_l_mean']:.3f}, token sets exact {s['token_set_exact_rate']:.2f}, "
            f"{s['seconds_total']:.1f} s"
        )
    else:
        echo(f"token sets exact {s['token_set_exact_rate']:.2f}, {s['seconds_total']:.1f} s")
