"""fedleak's LiRA and RMIA beside their authors' reference code, on the same target, reference models and
records: the comparison issue 4 asks for ("each attack must match or beat its counterpart on the same work").

    python bench/mia_reference_code.py --lira-src DIR --rmia-src DIR [--dataset SPEC] [--seeds 0,1,2]

- ``--lira-src``: Carlini et al.'s LiRA code, a copy of tensorflow/privacy's ``research/mi_lira_2021`` (its
  ``plot.py`` holds the scoring: ``generate_ours`` online, ``generate_ours_offline``).
- ``--rmia-src``: a checkout of ML Privacy Meter (privacytrustlab/ml_privacy_meter), whose
  ``modules/mia/attacks/rmia.py`` holds ``run_rmia``.

Neither is a dependency of fedleak and neither is bundled: the functions are loaded from the files given (from
``plot.py`` only its function definitions, as the script plots when run). The protocol is bench/mia.py's
tabular one (MLP 128 fitted to 100% on 1,000 members, 1,000 non-members, 3,010 population records, 16 reference
models, each record IN for half of them); by default on the MNIST test digits. fedleak trains the target and the
reference models once (``fedleak mia``'s code path); every scorer then reads the same logits:

- LiRA: the statistic phi = log p_y - log(1 - p_y) (the same statistic the LiRA code computes in ``score.py``);
  Carlini's ``generate_ours`` (per-record Gaussians, median means) and its fixed-variance and offline variants,
  beside fedleak's ``lira`` and ``lira-offline``.
- RMIA: p_y of each model; ML Privacy Meter's ``run_rmia`` (OUT models with the ``a`` approximation, a = 0.3 as
  fedleak's default; population records z scored with the models that never saw them, as its API expects),
  beside fedleak's ``rmia`` (online) and ``rmia-offline`` (a = 0.3, the same population records and models).
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch
from mia import DEFAULT_TABULAR, run_split_and_target  # bench/mia.py, beside this script

from fedleak.attacks.membership import MembershipContext, Records
from fedleak.attacks.membership.lira import lira_scores
from fedleak.attacks.membership.signals import confidence, scaled_logit
from fedleak.audit.mia import run_mia
from fedleak.fl import TrainSpec
from fedleak.metrics import roc_report


def functions_from(path: Path, names: list[str]) -> dict:
    """The named top-level functions of a script, without running its top-level statements."""
    tree = ast.parse(path.read_text(), str(path))
    keep = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    keep += [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in names]
    found = {n.name for n in keep if isinstance(n, ast.FunctionDef)}
    if missing := sorted(set(names) - found):
        raise SystemExit(f"{path}: no function {missing[0]}(); is this the LiRA code's plot.py?")
    ns: dict = {}
    exec(compile(ast.Module(body=keep, type_ignores=[]), str(path), "exec"), ns)  # noqa: S102
    return {n: ns[n] for n in names}


def module_from(path: Path, name: str):  # noqa: ANN201
    if not path.exists():
        raise SystemExit(f"{path} not found; is --rmia-src a checkout of ml_privacy_meter?")
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def signals(spec: str, seed: int, args: argparse.Namespace) -> tuple[dict, dict]:
    """fedleak's run (its own figures) and the logits every scorer reads, from one target and one set of
    reference models (trained once, then read back from the run's checkpoints)."""
    with tempfile.TemporaryDirectory() as tmp:
        ours = run_mia(
            dataset=spec,
            attack="loss,lira,lira-offline,rmia,rmia-offline",
            model=args.model,
            members=args.members,
            population=args.population,
            references=args.references,
            epochs=args.epochs,
            lr=args.lr,
            batch_size=args.batch_size,
            seed=seed,
            device=args.device,
            out=tmp,
            echo=lambda s: None,
        )
        data, (mem, non, pop), target = run_split_and_target(
            spec, args.members, args.population, seed, args.model, Path(tmp), args.device
        )
        ctx = MembershipContext(
            target,
            Records.of(mem).cat(Records.of(non)),
            Records.of(pop),
            args.references,
            args.model,
            data.spec,
            TrainSpec(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, momentum=0.9),
            seed,
            args.device,
            Path(tmp) / "references",  # the run's checkpoints: the same models, not retrained
        )
        _, in_x, in_z = ctx.reference_set()
        sig = {
            "t_x": ctx.target_logits().cpu(),
            "t_z": ctx.target_population_logits().cpu(),
            "r_x": ctx.reference_logits(True).cpu(),
            "r_z": ctx.reference_logits(True, "population").cpu(),
            "in_x": in_x.cpu(),
            "in_z": in_z.cpu(),
            "y_x": ctx.records.y.cpu(),
            "y_z": ctx.population.y.cpu(),  # type: ignore[union-attr]
            "member": torch.cat([torch.ones(len(mem)), torch.zeros(len(non))]).bool(),
        }
    return ours, sig


def score_all(ours: dict, s: dict, lira: dict, rmia_mod, a: float) -> dict[str, dict]:  # noqa: ANN001
    member = s["member"]
    rows: dict[str, dict] = {}
    # LiRA: one statistic for every scorer
    phi_t, phi_r = scaled_logit(s["t_x"], s["y_x"]), scaled_logit(s["r_x"], s["y_x"])
    keep, sc = s["in_x"].numpy(), phi_r.double().numpy()[..., None]  # (K, n), (K, n, 1 augmentation)
    check_keep, check_sc = member.numpy()[None], phi_t.double().numpy()[None, :, None]
    for label, fn in (
        ("LiRA online (Carlini et al.'s code)", lira["generate_ours"]),
        ("LiRA online, fixed variance (their code)", lambda *v: lira["generate_ours"](*v, fix_variance=True)),
        ("LiRA offline (their code)", lira["generate_ours_offline"]),
        ("LiRA offline, fixed variance (their code)", lambda *v: lira["generate_ours_offline"](*v, fix_variance=True)),
    ):
        pred, _ = fn(keep, sc, check_keep, check_sc)
        rows[label] = roc_report(-np.asarray(pred), member)  # their ROC sweeps -prediction
    for name in ("lira", "lira-offline"):
        rows[f"fedleak {name} (its run)"] = ours["attacks"][name]
    rows["fedleak lira, per-record variance"] = roc_report(
        lira_scores(phi_t, phi_r, s["in_x"], variance="per-record"), member
    )
    # RMIA: p_y of each model; the population scored with the models that never saw each z (half of them)
    p_t, p_r = confidence(s["t_x"], s["y_x"]), confidence(s["r_x"], s["y_x"])
    pz_t = confidence(s["t_z"], s["y_z"])
    pz_r = confidence(s["r_z"], s["y_z"])
    out_z = (~s["in_z"]).T  # (m, K)
    k_out = int(out_z.sum(1).min())
    z_out = torch.stack([row[o][:k_out] for row, o in zip(pz_r.T, out_z, strict=True)]).numpy()
    theirs = rmia_mod.run_rmia(
        p_t.double().numpy(), p_r.T.double().numpy(), s["in_x"].T.numpy(), pz_t.double().numpy(), z_out, a
    )
    rows[f"RMIA (ML Privacy Meter's run_rmia, a={a})"] = roc_report(theirs, member)
    for name in ("rmia", "rmia-offline"):
        rows[f"fedleak {name} (its run)"] = ours["attacks"][name]
    rows["loss threshold (fedleak)"] = ours["attacks"]["loss"]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lira-src", type=Path, required=True, help="tensorflow/privacy research/mi_lira_2021")
    ap.add_argument("--rmia-src", type=Path, required=True, help="a checkout of ml_privacy_meter")
    ap.add_argument("--dataset", default=DEFAULT_TABULAR)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--model", default="mlp:128")
    ap.add_argument("--members", type=int, default=1000)
    ap.add_argument("--population", type=int, default=3010)
    ap.add_argument("--references", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--a", type=float, default=0.3, help="RMIA's offline coefficient for both implementations")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    lira = functions_from(args.lira_src / "plot.py", ["generate_ours", "generate_ours_offline"])
    rmia_mod = module_from(args.rmia_src / "modules" / "mia" / "attacks" / "rmia.py", "mlpm_rmia")
    seeds = [int(v) for v in args.seeds.split(",")]
    table: dict[str, list[tuple[float, float, float]]] = {}
    for seed in seeds:
        ours, s = signals(args.dataset, seed, args)
        t = ours["target"]
        print(
            f"seed {seed}: target train accuracy {t['train_accuracy']:.3f}, test {t['test_accuracy']:.3f}; "
            f"{args.references} reference models",
            flush=True,
        )
        for label, r in score_all(ours, s, lira, rmia_mod, args.a).items():
            f = r["tpr_at_fpr"]
            table.setdefault(label, []).append((r["auc"], f["0.01"], f["0.001"]))
    print(f"\n## {args.dataset}, {args.model}, {args.members} members, seeds {args.seeds}: mean (min-max) over seeds")
    print(f"{'scorer':<52} {'AUC':>19} {'TPR@1%':>19} {'TPR@0.1%':>19}")

    def cell(v: list[float]) -> str:
        return f"{statistics.fmean(v):.3f} ({min(v):.3f}-{max(v):.3f})" if len(v) > 1 else f"{v[0]:.3f}"

    for label, vals in table.items():
        cols = [cell([v[i] for v in vals]) for i in range(3)]
        print(f"{label:<52} {cols[0]:>19} {cols[1]:>19} {cols[2]:>19}")


if __name__ == "__main__":
    main()
