"""Text inversion on the bundled demo records: quality and speed together.

    .venv/bin/python bench/text.py                 # 8 records per row, the default transformer
    .venv/bin/python bench/text.py --records 4 --model transformer:32,1 --rows tag-b1,loop-b1
    .venv/bin/python bench/text.py --dager --records 16   # DAGER on the decoder LM, B 1..128, FedAvg, LoRA; TAG b4
    .venv/bin/python bench/text.py --dager --dataset english   # the same on English sentences (GPL-3 text on disk)

``--dataset english`` is the text of the GNU GPL version 3 as Debian's base-files package installs it
(``/usr/share/common-licenses/GPL-3``, offline on every Debian/Ubuntu machine), split into sentences, one per
line (at least 5 tokens, duplicates dropped, cut at 32 words; 172 records), read as ``text:PATH?max_len=32``.

Each row attacks the same seeded sample of records (``--modality text``'s choice: ``fedleak invert`` picks
them alike) and prints the token-set exact rate, median token accuracy, exact-match rate, mean ROUGE-L,
seconds and recovered tokens per second. ``loop-b1`` runs the same attack one target at a time (the slow,
obvious version) beside the vectorised ``tag-b1``, in the same process: their ratio holds on a busy machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

ROWS = {
    # name: (attack, batch size, local steps, attack options, one target at a time)
    "tokens-b4": ("tokens", 4, None, {}, False),
    "tag-b1": ("tag", 1, None, {}, False),
    "loop-b1": ("tag", 1, None, {}, True),
    "tag-random-b1": ("tag", 1, None, {"init": "random", "iterations": 200}, False),
    "loop-random-b1": ("tag", 1, None, {"init": "random", "iterations": 200}, True),
    "tag-b4": ("tag", 4, None, {}, False),
    "tag-fedavg-b1": ("tag", 1, 2, {}, False),
}
# DAGER rows on the decoder LM (--lm-model, default bare gpt: 2 blocks of GPT-2-small shape): (batch, local steps,
# LoRA rank, round). Round 1: the untrained model, LoRA's B = 0; round 2: after one federated round of LoRA
# fine-tuning on other records (B trained, so dA = B^T dW carries the inputs' span). `--dager` runs these with
# TAG at batch 4 on --model beside them.
DAGER_ROWS = {
    "dager-b1": (1, None, None, 1),
    "dager-b4": (4, None, None, 1),
    "dager-b16": (16, None, None, 1),
    "dager-b64": (64, None, None, 1),
    "dager-b128": (128, None, None, 1),
    "dager-fedavg2-b4": (4, 2, None, 1),
    "dager-fedavg5-b4": (4, 5, None, 1),
    "dager-lora8-b4": (4, None, 8, 1),
    "dager-lora8-b4-r2": (4, None, 8, 2),
    "dager-lora8-b1-r2": (1, None, 8, 2),
    "dager-lora256-b4-r2": (4, None, 256, 2),
}
for _n, (_b, _s, _r, _round) in DAGER_ROWS.items():
    ROWS[_n] = ("dager", _b, _s, {}, False)
ENGLISH_SOURCE = "/usr/share/common-licenses/GPL-3"


def english_sentences(source: str = ENGLISH_SOURCE, out_dir: str | None = None) -> str:
    """The sentences of ``source`` (plain English), one per line, in a file; returns its ``text:`` spec."""
    import re
    import tempfile
    from pathlib import Path

    body = re.sub(r"\s+", " ", Path(source).read_text(encoding="utf-8"))
    sentences = [x.strip() for x in re.split(r"(?<=[.;:?!])\s+(?=[A-Z\"])", body)]
    sentences = list(dict.fromkeys(x for x in sentences if len(re.findall(r"\w+|[^\w\s]", x)) >= 5))
    path = Path(out_dir or tempfile.mkdtemp(prefix="fedleak-english-")) / "sentences.txt"
    path.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    return f"text:{path}?max_len=32"  # classes: each line's first word (TAG's classifier needs some; DAGER none)


def lora_round2(name: str, dataset: str, lm_model: str, picks: list[int], seed: int, device: str) -> tuple:
    """LoRA clients in round 2: one FedAvg round of adapter fine-tuning on 64 records outside ``picks`` (2
    clients, lr 0.5), then each group of B attacked records sends its adapters' gradient; returns
    (updates, attack seconds, reconstructions)."""
    from fedleak.attacks.inversion.text import invert_text
    from fedleak.audit.invert import group_positions
    from fedleak.data import load
    from fedleak.fl import FedConfig, Federation, client_update
    from fedleak.models import build

    batch, _, rank, _ = DAGER_ROWS[name]
    data = load(dataset)
    others = [i for i in range(len(data)) if i not in set(picks)]
    net = build(f"{lm_model}{',' if ':' in lm_model else ':'}lora={rank}", data.spec, seed=seed, device=device)
    cfg = FedConfig(clients=2, rounds=1, batch_size=16, lr=0.5, seed=seed)
    list(Federation(net, data.subset(others[:64]), data.subset(others[64:96]), cfg).run(keep_updates=False))
    groups = group_positions(picks, batch, "records")
    updates = [client_update(net, data.subset(g), seed=seed * 1000 + i, client=i) for i, g in enumerate(groups)]
    t0 = time.perf_counter()
    recs = invert_text(updates, "dager")
    return groups, time.perf_counter() - t0, recs


def score_groups(dataset: str, groups: list[list[int]], recs: list) -> list[dict]:
    from fedleak.data import load
    from fedleak.metrics.text import match_sequences, text_scores

    data = load(dataset)
    tok = data.extras["tokenizer"]
    pad = tok.pad_id
    out = []
    for g, rec in zip(groups, recs, strict=True):
        true = data.raw[g]
        perm = match_sequences(list(true), list(rec.tokens), pad)
        for j in range(len(g)):
            out.append({**text_scores(true[j], rec.tokens[perm[j]], pad), "text": tok.decode(true[j])})
    return out


def run_row(name: str, dataset: str, model: str, records: int, seed: int, device: str, lm_model: str = "gpt") -> dict:
    from fedleak.audit.invert import choose_positions
    from fedleak.audit.text_inversion import run_text_inversion
    from fedleak.data import load

    attack, batch, steps, options, loop = ROWS[name]
    lora = DAGER_ROWS[name][2] if name in DAGER_ROWS else None
    if name in DAGER_ROWS:
        model, records = lm_model, max(records, batch)
    n = len(load(dataset))
    picks = choose_positions(n, None, records, seed)
    if name in DAGER_ROWS and DAGER_ROWS[name][3] == 2:
        parts, seconds, recs = lora_round2(name, dataset, lm_model, picks, seed, device)
        return summarise(name, batch, "gradient", score_groups(dataset, parts, recs), seconds, len(recs), recs)
    groups = [picks] if not loop else [picks[i : i + batch] for i in range(0, len(picks), batch)]
    t0 = time.perf_counter()
    results = [
        run_text_inversion(
            dataset=dataset,
            model=model,
            attack=attack,
            indices=g,
            batch_size=batch,
            local_steps=steps,
            local_lr=0.05 if attack != "dager" else 0.01,
            lora_rank=lora,
            seed=seed,
            device=device,
            options=dict(options),
            echo=lambda s: None,
        )
        for g in groups
    ]
    seconds = time.perf_counter() - t0
    targets = [t for r in results for t in r["targets"]]
    details = [d for r in results for d in (r["attack_details"] or [])]
    row = summarise(name, batch, "delta" if steps else "gradient", targets, seconds, sum(r["updates"] for r in results))
    row["set_exact"] = sum(r["summary"]["token_set_exact_rate"] for r in results) / len(results)
    return {**row, **_dager_notes(details)}


def _dager_notes(details: list) -> dict:
    """What DAGER's own record says about the spans: vacuous/saturated updates, and where it stopped."""
    ex = [x if isinstance(x, dict) else x.extras for x in details]
    if not ex:
        return {"note": ""}
    notes = []
    if any(x["span_vacuous"] for x in ex):
        notes.append(f"vacuous {sum(x['span_vacuous'] for x in ex)}/{len(ex)}")
    if any(x.get("span_saturated") for x in ex):
        notes.append(f"saturated {sum(bool(x.get('span_saturated')) for x in ex)}/{len(ex)}")
    stops = [x["stopped_at_position"] for x in ex if x["stopped_at_position"] is not None]
    if stops:
        notes.append(f"stopped {len(stops)}/{len(ex)}")
    notes.append("rank1 " + "/".join(str(x["rank_1"][-1]) for x in ex[:2]))
    notes.append("rank2 " + "/".join(str(x["rank_2"][-1]) for x in ex[:2]))
    return {"note": ", ".join(notes)}


def summarise(name: str, batch: int, update: str, targets: list, seconds: float, updates: int, recs=None) -> dict:  # noqa: ANN001
    scored = [t for t in targets if t["token_accuracy"] is not None]
    tokens = sum(len(t["text"].split()) for t in targets)
    accs = sorted(t["token_accuracy"] for t in scored)
    return {
        **(_dager_notes(recs) if recs is not None else {}),
        "row": name,
        "batch": batch,
        "update": update,
        "set_exact": float("nan"),
        "acc_median": statistics.median(accs) if accs else None,
        "exact": sum(t["exact_match"] for t in scored) / len(scored) if scored else None,
        "rouge_l": sum(t["rouge_l"] for t in scored) / len(scored) if scored else None,
        "rouge_1": sum(t["rouge_1"] for t in scored) / len(scored) if scored else None,
        "rouge_2": sum(t["rouge_2"] for t in scored) / len(scored) if scored else None,
        "exact_n": f"{sum(int(t['exact_match']) for t in scored)}/{len(scored)}",
        "s_per_batch": seconds / updates,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds if scored else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="demo-records", help="a dataset spec, or english (GPL-3 sentences)")
    ap.add_argument("--model", default="transformer")
    ap.add_argument("--records", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rows", default=None, help=", ".join(ROWS))
    ap.add_argument("--lm-model", default="gpt", help="the decoder LM of the dager rows")
    ap.add_argument("--dager", action="store_true", help="rows: the DAGER ones (B 1-128, FedAvg, LoRA) and tag-b4")
    args = ap.parse_args()
    if args.rows is None:
        args.rows = ",".join([*DAGER_ROWS, "tag-b4"] if args.dager else [k for k in ROWS if k not in DAGER_ROWS])
    if args.dataset == "english":
        args.dataset = english_sentences()

    def f(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    run_row("tag-b1", args.dataset, args.model, 1, args.seed + 1, args.device)  # warm-up, not timed
    print(f"{args.dataset}, {args.model} (dager rows: {args.lm_model}), {args.records} records, seed {args.seed}")
    print(
        f"{'row':<21}{'B':>4} {'update':<9}{'set ok':>7}{'acc med':>8}{'exact':>8}{'R-1':>6}{'R-2':>6}{'R-L':>6}"
        f"{'s/batch':>9}{'seconds':>9}  note"
    )
    for name in args.rows.split(","):
        r = run_row(name.strip(), args.dataset, args.model, args.records, args.seed, args.device, args.lm_model)
        print(
            f"{r['row']:<21}{r['batch']:>4} {r['update']:<9}{r['set_exact']:>7.2f}"
            f"{f(r['acc_median'], '.3f'):>8}{r['exact_n']:>8}{f(r['rouge_1'], '.2f'):>6}{f(r['rouge_2'], '.2f'):>6}"
            f"{f(r['rouge_l'], '.2f'):>6}{r['s_per_batch']:>9.1f}{r['seconds']:>9.1f}  {r.get('note', '')}",
            flush=True,
        )


if __name__ == "__main__":
    main()
