"""``fedleak sweep``: the privacy-utility trade-off of a grid of defenses, one experiment per grid point.

Each ``--defense`` grid (``prune:0.5,0.9,0.99``, ``dp-sgd:epsilon=1,4,8``: see
:func:`fedleak.defenses.spec.expand_grid`) is one defense family; the sweep adds the undefended run as the
reference. For every point it runs the inversion experiment (:func:`fedleak.audit.invert.run_inversion`), the
membership experiment (:func:`fedleak.audit.mia.run_mia`), or both, each in its own sub-folder
``runs/<point>/``, and measures utility the same way for every point: the final test accuracy of a defended
federated training (:func:`fedleak.audit.train.run_training`). The membership experiment trains one target
centrally, so it runs only for defenses of how a model trains (dp-sgd); for the others (prune, quantize,
noise, clip, client-dp, secagg) its columns stay empty and the row's ``note`` says why. Membership figures are
paired with ``mia_target_accuracy`` (the accuracy of the target they attacked), inversion figures with
``utility``. It writes ``results.json`` (= ``sweep.json``:
``kind: "sweep"``, one flat row per point), ``sweep.md`` and ``sweep.csv`` (the table) and
``privacy_utility.png`` (attack success against utility, one curve per family).

    >>> from fedleak.audit.sweep import grid_points
    >>> grid_points(["prune:0.5,0.99", "dp-sgd:epsilon=1,8"])
    [('none', 'none'), ('prune', 'prune:0.5'), ('prune', 'prune:0.99'), ('dp-sgd', 'dp-sgd:epsilon=1'), ('dp-sgd', 'dp-sgd:epsilon=8')]
"""  # noqa: E501

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedleak.audit.invert import run_inversion
from fedleak.audit.mia import run_mia
from fedleak.audit.train import run_training
from fedleak.errors import FedleakInputError
from fedleak.report.plots import sweep_png
from fedleak.runio import atomic_write_bytes, atomic_write_json, atomic_write_text, read_json

COLUMNS = (
    "defense", "family", "utility", "mia_target_accuracy", "psnr_median", "ssim_mean", "label_accuracy",
    "rebuilt", "auc",
    "tpr_at_fpr_0.001", "tpr_at_fpr_0.01", "tpr_at_fpr_0.1", "epsilon", "epsilon_lower_bound", "seconds",
)  # fmt: skip


def grid_points(grids: list[str], baseline: bool = True) -> list[tuple[str, str]]:
    """(family, spec) for every point of every grid, the undefended ``none`` first; every spec is checked
    (``fedleak.defenses.plan``) before anything runs."""
    from fedleak.defenses import plan
    from fedleak.defenses.spec import expand_grid

    points: list[tuple[str, str]] = [("none", "none")] if baseline else []
    for grid in grids:
        for spec in expand_grid(grid):
            family = spec.partition(":")[0].strip()
            plan([spec])  # raises FedleakInputError on a bad point
            if (family, spec) not in points:
                points.append((family, spec))
    if not points:
        raise FedleakInputError("fedleak sweep: give a --defense grid, e.g. --defense prune:0.5,0.9")
    return points


def slug(spec: str) -> str:
    """A folder name for a defense spec: 'dp-sgd:epsilon=8,delta=1e-5' -> 'dp-sgd_epsilon-8_delta-1e-5'."""
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", spec.replace("=", "-")).strip("_") or "none"


def _central(spec: str) -> bool:
    """Whether a defense applies to a centrally trained model (only how it trains: dp-sgd, or none)."""
    from fedleak.defenses import plan

    p = plan([] if spec == "none" else [spec])
    return not (p.transforms or p.aggregator is not None or p.secagg)


def _row(family: str, spec: str, inv: dict | None, mia: dict | None, train: dict | None, seconds: float) -> dict:
    row: dict[str, Any] = {"defense": spec, "family": family}
    if mia is not None:
        tgt = mia.get("target") or {}
        row["mia_target_accuracy"] = tgt.get("test_accuracy")
        body = mia if "auc" in mia else next(iter((mia.get("attacks") or {}).values()), {})
        row["auc"] = body.get("auc")
        for f, v in (body.get("tpr_at_fpr") or {}).items():
            row[f"tpr_at_fpr_{f}"] = v
        priv = mia.get("privacy") or {}
        row["epsilon"] = priv.get("epsilon")
        row["epsilon_lower_bound"] = priv.get("epsilon_lower_bound")
    if train is not None:
        rounds = train.get("rounds") or [{}]
        row["utility"] = rounds[-1].get("test_accuracy")
        if row.get("epsilon") is None:
            row["epsilon"] = (train.get("privacy") or {}).get("epsilon")
    if inv is not None:
        summ = inv.get("summary") or {}
        for k in ("psnr_median", "ssim_mean", "label_accuracy"):
            row[k] = summ.get(k)
        targets = inv.get("targets") or []
        if targets and all("rebuilt" in t for t in targets):
            row["rebuilt"] = f"{sum(bool(t['rebuilt']) for t in targets)} of {len(targets)}"
        if row.get("epsilon") is None:
            row["epsilon"] = (inv.get("privacy") or {}).get("epsilon")
    row["seconds"] = seconds
    return row


def run_sweep(
    *,
    dataset: str,
    model: str,
    defenses: list[str],
    invert: str | None = None,
    mia: str | None = None,
    indices: list[int] | None = None,
    iterations: int | None = None,
    members: int | None = None,
    references: int | None = None,
    clients: int = 10,
    rounds: int = 10,
    samples: int = 0,
    seed: int = 0,
    device: str = "cpu",
    resume: bool = False,
    out: Path,
    echo: Callable[[str], None] = print,
) -> dict:
    """Run the grid and write the sweep's run folder; returns its results.json content.

    ``invert``/``mia``: the attack of each experiment (at least one). Utility is the final test accuracy of
    a defended federated training (``clients``, ``rounds``, ``samples``) of ``model`` on ``dataset``.
    ``resume`` reuses the finished points of an earlier run in ``out``.
    """
    if not invert and not mia:
        raise FedleakInputError("fedleak sweep: choose an attack: --invert idlg and/or --mia loss")
    points = grid_points(defenses)
    out = Path(out)
    rows: list[dict] = []
    t_all = time.perf_counter()
    for i, (family, spec) in enumerate(points, 1):
        folder = out / "runs" / slug(spec)
        done = folder / "row.json"
        if resume and done.exists():
            rows.append(read_json(done))
            echo(f"[{i}/{len(points)}] {spec}: reused")
            continue
        echo(f"[{i}/{len(points)}] {spec}")
        t0 = time.perf_counter()
        defs = [] if spec == "none" else [spec]
        common = {"dataset": dataset, "model": model, "seed": seed, "device": device}
        inv_res = mia_res = train_res = None
        notes = []
        if invert:
            inv_res = run_inversion(
                **common,
                defenses=defs,
                attack=invert,
                indices=indices,
                iterations=iterations,
                out=folder / "invert",
                echo=lambda s: None,
            )
        if mia and _central(spec):
            mia_opts = {k: v for k, v in (("members", members), ("references", references)) if v is not None}
            mia_res = run_mia(**common, defense=defs, attack=mia, out=folder / "mia", echo=lambda s: None, **mia_opts)
        elif mia:
            notes.append(
                f"membership not measured: {spec} changes what a client sends, and the membership experiment attacks "
                "a centrally trained target"
            )
            echo(f"    {notes[-1]}")
        train_res = run_training(
            dataset=dataset,
            model=model,
            clients=clients,
            rounds=rounds,
            samples=samples,
            seed=seed,
            device=device,
            defenses=defs,
            out=folder / "train",
            echo=lambda s: None,
        )
        row = _row(family, spec, inv_res, mia_res, train_res, time.perf_counter() - t0)
        if notes:
            row["note"] = "; ".join(notes)
        atomic_write_json(done, row)
        rows.append(row)
        echo("    " + ", ".join(f"{k} {_fmt(row.get(k))}" for k in COLUMNS[2:] if row.get(k) is not None))
    result = {
        "kind": "sweep",
        "dataset": dataset,
        "model": model,
        "seed": seed,
        "attacks": {"inversion": invert, "membership": mia},
        "defenses": list(defenses),
        "utility": f"test accuracy of the defended federated training ({clients} clients, {rounds} rounds)",
        "rows": rows,
        "images": ["privacy_utility.png"],
        "seconds_total": time.perf_counter() - t_all,
    }
    atomic_write_text(out / "sweep.md", table_markdown(rows))
    atomic_write_text(out / "sweep.csv", table_csv(rows))
    atomic_write_bytes(out / "privacy_utility.png", sweep_png(rows))
    atomic_write_json(out / "sweep.json", result)
    atomic_write_json(out / "results.json", result)
    echo(table_markdown(rows))
    echo(f"wrote {out / 'results.json'}, sweep.md, sweep.csv and privacy_utility.png")
    return result


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e6 else "inf"
    return str(v)


def _columns(rows: list[dict]) -> list[str]:
    return [c for c in COLUMNS if any(r.get(c) is not None for r in rows)]


def table_markdown(rows: list[dict]) -> str:
    """The sweep as a Markdown table (only the columns some row has)."""
    cols = _columns(rows)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def table_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=_columns(rows), extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()
