"""Text inversion on the bundled demo records: quality and speed together.

    .venv/bin/python bench/text.py                 # 8 records per row, the default transformer
    .venv/bin/python bench/text.py --records 4 --model transformer:32,1 --rows tag-b1,loop-b1

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


def run_row(name: str, dataset: str, model: str, records: int, seed: int, device: str) -> dict:
    from fedleak.audit.invert import choose_positions
    from fedleak.audit.text_inversion import run_text_inversion
    from fedleak.data import load

    attack, batch, steps, options, loop = ROWS[name]
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
            local_lr=0.05,
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
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma list of {', '.join(ROWS)}")
    args = ap.parse_args()

    def f(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    run_row("tag-b1", args.dataset, args.model, 1, args.seed + 1, args.device)  # warm-up, not timed
    print(f"{args.dataset}, {args.model}, {args.records} records, seed {args.seed}, {args.device}")
    print(
        f"{'row':<15}{'B':>3} {'update':<9}{'set ok':>7}{'acc med':>8}{'exact':>7}{'ROUGE-L':>8}"
        f"{'seconds':>9}{'tok/s':>8}"
    )
    for name in args.rows.split(","):
        r = run_row(name.strip(), args.dataset, args.model, args.records, args.seed, args.device)
        print(
            f"{r['row']:<15}{r['batch']:>3} {r['update']:<9}{r['set_exact']:>7.2f}"
            f"{f(r['acc_median'], '.3f'):>8}{f(r['exact'], '.2f'):>7}{f(r['rouge_l'], '.3f'):>8}"
            f"{r['seconds']:>9.1f}"
            f"{f(r['tokens_per_s'], '.1f'):>8}",
            flush=True,
        )


if __name__ == "__main__":
    main()
