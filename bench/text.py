"""Text inversion on the bundled demo records: quality and speed together.

    .venv/bin/python bench/text.py                 # 8 records per row, the default transformer
    .venv/bin/python bench/text.py --records 4 --model transformer:32,1 --rows tag-b1,loop-b1
    .venv/bin/python bench/text.py --dager --records 16   # DAGER on the decoder LM, B 1..128, FedAvg, LoRA; TAG b4

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
# LoRA rank); `--dager` runs these with TAG at batch 4 on --model beside them.
DAGER_ROWS = {
    "dager-b1": (1, None, None),
    "dager-b4": (4, None, None),
    "dager-b16": (16, None, None),
    "dager-b64": (64, None, None),
    "dager-b128": (128, None, None),
    "dager-fedavg2-b4": (4, 2, None),
    "dager-fedavg5-b4": (4, 5, None),
    "dager-lora8-b4": (4, None, 8),
}
for _n, (_b, _s, _r) in DAGER_ROWS.items():
    ROWS[_n] = ("dager", _b, _s, {}, False)


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
    scored = [t for t in targets if t["token_accuracy"] is not None]
    tokens = sum(len(t["text"].split()) for t in targets)
    accs = sorted(t["token_accuracy"] for t in scored)
    return {
        "row": name,
        "batch": batch,
        "update": "delta" if steps else "gradient",
        "set_exact": sum(r["summary"]["token_set_exact_rate"] for r in results) / len(results),
        "acc_median": statistics.median(accs) if accs else None,
        "exact": sum(t["exact_match"] for t in scored) / len(scored) if scored else None,
        "rouge_l": sum(t["rouge_l"] for t in scored) / len(scored) if scored else None,
        "rouge_1": sum(t["rouge_1"] for t in scored) / len(scored) if scored else None,
        "rouge_2": sum(t["rouge_2"] for t in scored) / len(scored) if scored else None,
        "exact_n": f"{sum(int(t['exact_match']) for t in scored)}/{len(scored)}",
        "s_per_batch": seconds / sum(r["updates"] for r in results),
        "seconds": seconds,
        "tokens_per_s": tokens / seconds if scored else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="demo-records")
    ap.add_argument("--model", default="transformer")
    ap.add_argument("--records", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rows", default=",".join(k for k in ROWS if k not in DAGER_ROWS), help=", ".join(ROWS))
    ap.add_argument("--lm-model", default="gpt", help="the decoder LM of the dager rows")
    ap.add_argument("--dager", action="store_true", help="the DAGER rows (batch 1-128, FedAvg, LoRA) and tag-b4")
    args = ap.parse_args()
    if args.dager:
        args.rows = ",".join([*DAGER_ROWS, "tag-b4"])

    def f(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    run_row("tag-b1", args.dataset, args.model, 1, args.seed + 1, args.device)  # warm-up, not timed
    print(f"{args.dataset}, {args.model} (dager rows: {args.lm_model}), {args.records} records, seed {args.seed}")
    print(
        f"{'row':<17}{'B':>4} {'update':<9}{'set ok':>7}{'acc med':>8}{'exact':>8}{'R-1':>6}{'R-2':>6}{'R-L':>6}"
        f"{'s/batch':>9}{'seconds':>9}"
    )
    for name in args.rows.split(","):
        r = run_row(name.strip(), args.dataset, args.model, args.records, args.seed, args.device, args.lm_model)
        print(
            f"{r['row']:<17}{r['batch']:>4} {r['update']:<9}{r['set_exact']:>7.2f}"
            f"{f(r['acc_median'], '.3f'):>8}{r['exact_n']:>8}{f(r['rouge_1'], '.2f'):>6}{f(r['rouge_2'], '.2f'):>6}"
            f"{f(r['rouge_l'], '.2f'):>6}{r['s_per_batch']:>9.1f}{r['seconds']:>9.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
