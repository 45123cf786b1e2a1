"""ART's shadow-model membership attack on a split exported by ``bench/mia.py`` (runs without torch or fedleak).

    python3 -m venv /tmp/artvenv && /tmp/artvenv/bin/pip install adversarial-robustness-toolbox scikit-learn packaging
    python bench/mia.py --skip-speed --skip-attacks --skip-cifar --art-python /tmp/artvenv/bin/python
    /tmp/artvenv/bin/python bench/art_shadow.py split.npz [--shadows 4] [--member-ratio 0.5] [--json]

The .npz holds the members, non-members and population (inputs flattened as the target sees them), the
fedleak target's softmax outputs on members and non-members, and how the target was trained. ART's
``ShadowModels`` trains ``--shadows`` shadow models on the population (scikit-learn ``MLPClassifier`` of the
target's architecture, trained like the target: SGD at the same rate, momentum, batch size and epochs, no weight
decay), wrapped as ART ``SklearnClassifier``; their outputs on their own members and non-members train
``MembershipInferenceBlackBox(attack_model_type="rf")``, which then scores the fedleak target's outputs (ART's
black-box API with precomputed predictions). AUC and TPR at low FPR use fedleak's own ROC code
(``src/fedleak/metrics/roc.py``, numpy only), so the figures compare with fedleak's attacks on the same work.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
import warnings
from pathlib import Path

import numpy as np

ROC_FILE = Path(__file__).resolve().parents[1] / "src" / "fedleak" / "metrics" / "roc.py"


def _roc_module():  # noqa: ANN202
    spec = importlib.util.spec_from_file_location("fedleak_roc", ROC_FILE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("npz", type=Path)
    ap.add_argument("--shadows", type=int, default=4)
    ap.add_argument("--member-ratio", type=float, default=0.5, help="ART's default: half the shadow data each")
    ap.add_argument("--json", action="store_true", help="print the result as one JSON line at the end")
    args = ap.parse_args()

    import art
    from art.attacks.inference.membership_inference import MembershipInferenceBlackBox, ShadowModels
    from art.estimators.classification import SklearnClassifier
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    roc = _roc_module()
    z = np.load(args.npz)
    meta = json.loads(str(z["meta"]))
    if not meta.get("hidden"):
        raise SystemExit(f"{meta['model']}: art_shadow.py builds MLP shadows only (model mlp:H)")
    c = int(meta["num_classes"])
    onehot = np.eye(c, dtype=np.float32)
    seed = int(meta["seed"])
    np.random.seed(seed)  # the shadows' initialisation and batches and the random forest draw from it

    template = SklearnClassifier(
        MLPClassifier(
            hidden_layer_sizes=tuple(meta["hidden"]),
            activation=meta["act"],
            solver="sgd",
            learning_rate="constant",
            learning_rate_init=float(meta["lr"]),
            momentum=float(meta["momentum"]),
            nesterovs_momentum=False,
            batch_size=int(meta["batch_size"]),
            max_iter=int(meta["epochs"]),
            n_iter_no_change=int(meta["epochs"]) + 1,  # train all epochs, like the target
            tol=0.0,
            alpha=0.0,
            shuffle=True,
        )
    )
    # ART 1.20.1: clone_for_refitting copies nb_classes, which an unfitted SklearnClassifier holds as -1 and its
    # setter then refuses ("nb_classes must be greater than or equal to 2"); name the class count up front
    template.nb_classes = c
    xp, yp = z["x_population"], z["y_population"]
    t0 = time.perf_counter()
    shadows = ShadowModels(template, num_shadow_models=args.shadows, random_state=seed)
    (mx, my, mp), (nx, ny, npred) = shadows.generate_shadow_dataset(xp, onehot[yp], member_ratio=args.member_ratio)
    models = shadows.get_shadow_models()
    attack = MembershipInferenceBlackBox(models[0], attack_model_type="rf")  # the estimator only names the shapes
    attack.fit(x=mx, y=my, test_x=nx, test_y=ny, pred=mp, test_pred=npred)
    pred = np.concatenate([z["p_members"], z["p_nonmembers"]])
    labels = np.concatenate([z["y_members"], z["y_nonmembers"]])
    scores = attack.infer(None, onehot[labels], pred=pred, probabilities=True).reshape(-1)
    seconds = time.perf_counter() - t0
    is_member = np.r_[np.ones(len(z["y_members"]), bool), np.zeros(len(z["y_nonmembers"]), bool)]
    rep = roc.roc_report(scores, is_member)
    # the shadow dataset is each shadow's members (non-members) in turn, in equal parts
    mparts, nparts = np.array_split(np.arange(len(mx)), len(models)), np.array_split(np.arange(len(nx)), len(models))
    train_acc = float(np.mean([(mp[i].argmax(1) == my[i].argmax(1)).mean() for i in mparts]))
    test_acc = float(np.mean([(npred[i].argmax(1) == ny[i].argmax(1)).mean() for i in nparts]))
    out = {
        "art_version": art.__version__,
        "shadows": args.shadows,
        "member_ratio": args.member_ratio,
        "shadow_model": f"MLPClassifier{tuple(meta['hidden'])} {meta['act']}, SGD",
        "shadow_train_records": len(mparts[0]),
        "shadow_train_accuracy": train_acc,
        "shadow_test_accuracy": test_acc,
        "auc": rep["auc"],
        "tpr_at_fpr": rep["tpr_at_fpr"],
        "balanced_accuracy": rep["balanced_accuracy"],
        "seconds": seconds,
    }
    print(
        f"ART {art.__version__} shadow models ({args.shadows}, RF) on {meta['dataset']}: AUC {rep['auc']:.3f}, "
        f"TPR@1% {rep['tpr_at_fpr']['0.01']:.3f}, TPR@0.1% {rep['tpr_at_fpr']['0.001']:.3f} ({seconds:.1f} s; "
        f"shadow train accuracy {train_acc:.3f}, held-out {test_acc:.3f})"
    )
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
