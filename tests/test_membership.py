"""Membership inference: ROC metrics, signals, attacks, reference models, the mia command."""

import json

import numpy as np
import pytest
import torch
from conftest import run_cli

import fedleak
from fedleak.attacks.membership import (
    Records,
    balanced_masks,
    membership_scores,
    train_references,
    update_scores,
)
from fedleak.attacks.membership.lira import lira_scores
from fedleak.attacks.membership.rmia import rmia_scores
from fedleak.attacks.membership.shadowdata import feature_sampler, hill_climb
from fedleak.attacks.membership.signals import modified_entropy, scaled_logit
from fedleak.data.dataset import table_spec
from fedleak.fl import SGDTrainer, TrainSpec
from fedleak.metrics import roc_report
from fedleak.metrics.roc import auc, tpr_at_fpr

# ---------------------------------------------------------------- metrics


def test_roc_exact_values_and_ties():
    r = roc_report([0.9, 0.8, 0.7, 0.1], [True, False, True, False])
    assert r["auc"] == 0.75
    # two non-members resolve no FPR level of 10% or below: not resolvable, never a number
    assert r["tpr_at_fpr"] == {"0.001": None, "0.01": None, "0.1": None}
    assert r["balanced_accuracy"] == 0.75
    # ten non-members resolve 10% (one non-member above the threshold): 0.85 is that one, all three members beat
    # the next (0.6); at 1% and 0.1% they do not resolve
    ten = roc_report([0.9, 0.8, 0.7] + [0.85, 0.6] + [0.1] * 8, [True] * 3 + [False] * 10)
    assert ten["tpr_at_fpr"] == {"0.001": None, "0.01": None, "0.1": 1.0}
    const = roc_report(np.zeros(20), np.arange(20) < 10)
    assert const["auc"] == 0.5 and const["tpr_at_fpr"]["0.1"] == 0.0
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    s, m = rng.integers(0, 7, 500), rng.random(500) < 0.4
    assert abs(auc(s, m) - roc_auc_score(m, s)) < 1e-12


def test_tpr_at_fpr_counts_only_thresholds_within_the_fpr():
    # 1000 non-members, 10 of them score above every member: at 1% FPR every member is caught, at 0.1% none
    scores = np.r_[np.full(10, 10.0), np.zeros(990), np.full(100, 5.0)]
    member = np.r_[np.zeros(1000, bool), np.ones(100, bool)]
    t = tpr_at_fpr(scores, member)
    assert t["0.001"] == 0.0 and t["0.01"] == 1.0


# ---------------------------------------------------------------- signals


def test_signals_match_their_definitions():
    logits = torch.randn(6, 5, generator=torch.Generator().manual_seed(0)) * 3
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    p = logits.softmax(-1).double()
    py = p[torch.arange(6), y]
    assert torch.allclose(scaled_logit(logits, y).double(), torch.log(py / (1 - py)), atol=1e-4)
    want = []
    for i in range(6):
        terms = [-(1 - py[i]) * torch.log(py[i])]
        terms += [-p[i, j] * torch.log(1 - p[i, j]) for j in range(5) if j != y[i]]
        want.append(sum(terms))
    assert torch.allclose(modified_entropy(logits, y).double(), torch.stack(want), atol=1e-5)


# ---------------------------------------------------------------- targets


def _fit(model, x, y, spec, seed=0):
    SGDTrainer().train(model, x, y, spec, torch.Generator().manual_seed(seed))
    return model.eval()


@pytest.fixture(scope="module")
def digits_split():
    data = fedleak.data.load("digits")
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    return data, data.subset(perm[:150]), data.subset(perm[150:300]), data.subset(perm[300:600])


@pytest.fixture(scope="module")
def overfit_target(digits_split):
    data, mem, _, _ = digits_split
    model = fedleak.models.build("mlp:64", data.spec, seed=0)
    return _fit(model, *mem.tensors(), TrainSpec(epochs=60, batch_size=64, lr=0.1, momentum=0.9))


@pytest.mark.parametrize("attack", ["loss", "confidence", "entropy", "mentropy", "loss-class"])
def test_members_score_above_non_members_on_an_overfit_model(digits_split, overfit_target, attack):
    _, mem, non, pop = digits_split
    records = Records.of(mem).cat(Records.of(non))
    s = membership_scores(overfit_target, records, attack, population=pop)
    assert s[:150].mean() > s[150:].mean()
    assert roc_report(s, torch.arange(300) < 150)["auc"] > 0.55


def test_auc_is_near_chance_when_the_model_never_saw_the_members(digits_split):
    data, mem, non, pop = digits_split
    model = _fit(fedleak.models.build("mlp:64", data.spec, seed=1), *pop.tensors(), TrainSpec(epochs=40))
    records = Records.of(mem).cat(Records.of(non))  # "members" that are not members: both sets are unseen
    for attack in ("loss", "mentropy"):
        assert abs(roc_report(membership_scores(model, records, attack), torch.arange(300) < 150)["auc"] - 0.5) < 0.08


# ---------------------------------------------------------------- LiRA / RMIA


def test_lira_statistics_on_a_constructed_case():
    # record 0: IN models give phi ~ 6, OUT models ~ -2; the target says 6 -> member. record 1 never moves.
    g = torch.Generator().manual_seed(0)
    ins = balanced_masks(16, 2, seed=0)
    ref = torch.where(ins, 6.0, -2.0) + 0.3 * torch.randn(16, 2, generator=g)
    ref[:, 1] = 0.3 * torch.randn(16, generator=g)
    for variance in ("global", "per-record"):
        s = lira_scores(torch.tensor([6.0, 0.0]), ref, ins, variance=variance)
        assert s[0] > 10 and abs(float(s[1])) < 3
        off = lira_scores(torch.tensor([6.0, 0.0]), ref, ins, online=False, variance=variance)
        assert off[0] > -1e-3 and off[1] < off[0]


def test_rmia_score_is_the_fraction_of_population_beaten():
    pz = torch.linspace(0.1, 0.9, 9)
    s = rmia_scores(torch.tensor([0.95, 0.05]), torch.full((4, 2), 0.5), pz, torch.full((4, 9), 0.5))
    assert 1.0 <= float(s[0]) < 1.0 + 1 / 9 and 0.0 <= float(s[1]) < 1 / 9


def _blobs(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g)
    return x, (x[:, 0] > 0).long()


def test_lira_ranks_a_planted_outlier_member_first():
    xm, ym = _blobs(60, 1)
    xm[0], ym[0] = (
        torch.tensor([2.5, 2.5]),
        0,
    )  # deep in class 1's region, labelled 0: only memorising fits it
    xn, yn = _blobs(60, 2)
    xp, yp = _blobs(60, 3)
    spec = table_spec("blobs", torch.cat([xm, xn, xp]), ["neg", "pos"])
    spec = type(spec)(**{**spec.__dict__, "mean": (0.0, 0.0), "std": (1.0, 1.0)})
    train = TrainSpec(epochs=150, batch_size=128, lr=0.01, optimizer="adam")  # one step per epoch
    target = _fit(fedleak.models.build("mlp:64", spec, seed=0), xm, ym, train)
    assert int(target(xm[:1]).argmax()) == 0  # the target memorised the outlier
    records = Records(torch.cat([xm, xn]), torch.cat([ym, yn]))
    lira = membership_scores(
        target,
        records,
        "lira",
        population=(xp, yp),
        references=8,
        model_spec="mlp:64",
        data_spec=spec,
        train_spec=train,
        seed=0,
    )
    assert int(lira.argmax()) == 0


# ---------------------------------------------------------------- reference models


def test_vectorised_reference_training_matches_sequential_and_checkpoints(tmp_path):
    data = fedleak.data.load("digits")
    x, y = data.tensors(range(101))
    masks = balanced_masks(4, 101, seed=0)  # odd pool: the pairs are the same size (50)
    masks[3, :10] = True  # one model with a ragged plan (more records, more steps)
    spec = TrainSpec(epochs=3, batch_size=16, lr=0.1, momentum=0.9)
    vec = train_references("mlp:16", data.spec, x, y, masks, spec, seed=3, checkpoint_dir=tmp_path)
    seq = train_references("mlp:16", data.spec, x, y, masks, spec, seed=3, vectorised=False)
    for n in vec.params:
        assert torch.allclose(vec.params[n], seq.params[n], atol=1e-5), n
    one = fedleak.models.build("mlp:16", data.spec, seed=0)
    one.load_state_dict({n: p[2] for n, p in seq.params.items()})
    assert torch.allclose(vec.logits(x)[2], one(x), atol=1e-4)
    again = train_references("mlp:16", data.spec, x, y, masks, spec, seed=3, checkpoint_dir=tmp_path)
    assert again.seconds == 0.0 and all(torch.equal(again.params[n], vec.params[n]) for n in vec.params)
    other = train_references("mlp:16", data.spec, x, y, masks, spec, seed=4, checkpoint_dir=tmp_path)
    assert other.seconds > 0 and not torch.equal(other.params["net.1.weight"], vec.params["net.1.weight"])
    # chunks (as Ray tasks would run them) give the same models
    parts = [train_references("mlp:16", data.spec, x, y, masks[a : a + 2], spec, seed=3, first=a) for a in (0, 2)]
    joined = type(vec).concat(parts)
    assert all(torch.allclose(joined.params[n], vec.params[n], atol=1e-6) for n in vec.params)


@pytest.mark.parametrize("model,chain", [("mlp:16,8,act=relu", True), ("lenet", False)])
def test_vectorised_training_with_and_without_the_batched_matmul_path_matches_sequential(model, chain):
    from fedleak.attacks.membership.stacked_mlp import plain_mlp

    data = fedleak.data.load("digits")
    x, y = data.tensors(range(60))
    net = fedleak.models.build(model, data.spec)
    assert (plain_mlp(net, [n for n, _ in net.named_parameters()]) is not None) == chain
    masks = balanced_masks(3, 60, seed=1)
    masks[0, :7] = True  # ragged: model 0 has more records and more steps
    spec = TrainSpec(epochs=2, batch_size=8, lr=0.05, momentum=0.9, weight_decay=1e-3)
    vec = train_references(model, data.spec, x, y, masks, spec, seed=5)
    seq = train_references(model, data.spec, x, y, masks, spec, seed=5, vectorised=False)
    for n in vec.params:
        assert torch.allclose(vec.params[n], seq.params[n], atol=1e-5), n
    adam = TrainSpec(steps=7, batch_size=16, lr=1e-2, optimizer="adam")
    vec = train_references(model, data.spec, x, y, masks, adam, seed=5)
    seq = train_references(model, data.spec, x, y, masks, adam, seed=5, vectorised=False)
    for n in vec.params:
        assert torch.allclose(vec.params[n], seq.params[n], atol=1e-5), n


def test_reference_membership_by_ids():
    data = fedleak.data.load("digits")
    x, y = data.tensors(range(20))
    masks = balanced_masks(2, 20, seed=0)
    refs = train_references("mlp:8", data.spec, x, y, masks, TrainSpec(steps=1), pool_ids=torch.arange(100, 120))
    got = refs.membership(torch.tensor([105, 999, 100]))
    assert torch.equal(got[:, 0], masks[:, 5]) and not got[:, 1].any() and torch.equal(got[:, 2], masks[:, 0])


# ---------------------------------------------------------------- Shokri's synthesis, federated


def test_shokri_classifiers_beat_chance_and_repeat_by_seed(digits_split, overfit_target):
    from fedleak.errors import FedleakInputError

    data, mem, non, pop = digits_split
    records = Records.of(mem).cat(Records.of(non))
    common = dict(
        population=pop,
        references=4,
        model_spec="mlp:64",
        data_spec=data.spec,
        train_spec=TrainSpec(epochs=60, batch_size=64, lr=0.1, momentum=0.9),
        seed=0,
    )
    truth = torch.arange(300) < 150
    gbt = membership_scores(overfit_target, records, "shokri", **common)
    assert torch.equal(gbt, membership_scores(overfit_target, records, "shokri", **common))
    assert roc_report(gbt, truth)["auc"] > 0.55
    mlp = membership_scores(overfit_target, records, "shokri", classifier="per-class-mlp", **common)
    assert roc_report(mlp, truth)["auc"] > 0.55
    with pytest.raises(FedleakInputError, match="classifier"):
        membership_scores(overfit_target, records, "shokri", classifier="svm", **common)


def test_hill_climbing_finds_records_the_target_puts_in_their_class(overfit_target, digits_split):
    data = digits_split[0]
    query = lambda x: overfit_target(x).softmax(-1)  # noqa: E731
    x, cls = hill_climb(
        query,
        10,
        40,
        feature_sampler(data.spec),
        torch.Generator().manual_seed(0),
        iterations=150,
        conf_min=0.5,
    )
    with torch.no_grad():
        p = query(x)
    hit = (p.argmax(1) == cls) & (p.gather(1, cls.view(-1, 1)).squeeze(1) > 0.5)
    assert hit.float().mean() >= 0.8


def test_membership_in_one_clients_update(digits_split):
    data, mem, non, _ = digits_split
    model = fedleak.models.build("mlp:64", data.spec, seed=0)
    client = mem.subset(range(50))
    x = torch.cat([client.tensors()[0], non.tensors()[0][:50]])
    y = torch.cat([client.tensors()[1], non.tensors()[1][:50]])
    truth = torch.arange(100) < 50
    delta = fedleak.fl.client_update(model, client, local_epochs=10, batch_size=10, lr=0.1)
    assert roc_report(update_scores(delta, x, y), truth)["auc"] > 0.7
    grad = fedleak.fl.client_update(model, client)  # FedSGD: one gradient of the 50 records
    assert roc_report(update_scores(grad, x, y), truth)["auc"] > 0.7


# ---------------------------------------------------------------- the command


def test_mia_command_writes_results_and_plot(tmp_path, capsys):
    out = tmp_path / "mia"

    def mia_args(attack: str) -> list:
        flags = f"--model mlp:64 --attack {attack} --members 150 --references 4 --epochs 60 --seed 0 --out"
        return ["mia", "--dataset", "breast-cancer", *flags.split(), out]

    code, stdout, _ = run_cli(mia_args("all"), capsys)
    assert code == 0
    d = json.loads((out / "results.json").read_text())
    for key in (
        "kind",
        "attack",
        "model",
        "dataset",
        "seed",
        "auc",
        "tpr_at_fpr",
        "balanced_accuracy",
        "target",
        "seconds_total",
    ):
        assert key in d
    assert d["kind"] == "membership" and set(d["tpr_at_fpr"]) == {"0.001", "0.01", "0.1"}
    assert {"loss", "shokri", "lira", "lira-offline", "rmia", "rmia-offline"} <= set(d["attacks"])
    assert d["target"]["train_accuracy"] >= 0.99
    assert d["attacks"]["lira"]["auc"] > 0.5 and d["auc"] == d["attacks"][d["headline"]]["auc"]
    assert (out / "roc.png").read_bytes()[:4] == b"\x89PNG" and "lira" in stdout
    # a rerun resumes: the target and the reference models are loaded, the numbers are the same
    code, stdout, _ = run_cli(mia_args("lira"), capsys)
    d2 = json.loads((out / "results.json").read_text())
    assert code == 0 and "loaded" in stdout and d2["auc"] == d["attacks"]["lira"]["auc"] and "attacks" not in d2


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--members", "1000"], "--members 1000"),
        (["--attack", "lira", "--references", "1"], "--references 1"),
        (["--attack", "nosuch"], "unknown membership attack"),
        (["--shadow-data", "nope"], "unknown shadow data source"),
    ],
)
def test_mia_bad_input_is_one_line_exit_2(tmp_path, capsys, args, needle):
    out = tmp_path / "bad"
    code, _, err = run_cli(["mia", "--dataset", "digits", *args, "--epochs", "1", "--out", out], capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and needle in lines[0]
    assert not out.exists()


def test_noisy_shadow_copies_keep_labels_and_redraw_a_fraction_of_features():
    from fedleak.attacks.membership.shadowdata import noisy_copies

    data = fedleak.data.load("digits")
    x, y = data.tensors(range(100))
    nx, ny = noisy_copies(x, y, 500, feature_sampler(data.spec), torch.Generator().manual_seed(0), seeds=5, flip=0.2)
    assert nx.shape == (500, *x.shape[1:])
    src = [(x == row).flatten(1).float().mean(1).argmax() for row in nx[:50]]  # the record each copy came from
    assert len({int(s) for s in src}) <= 5
    same = torch.stack([(nx[i] == x[s]).float().mean() for i, s in enumerate(src)])
    assert all(int(ny[i]) == int(y[s]) for i, s in enumerate(src))
    assert 0.7 < float(same.mean()) < 0.9  # about 20% of the features re-drawn


@pytest.mark.parametrize(
    "module",
    [
        "metrics.roc",
        "attacks.membership",
        "attacks.membership.signals",
        "attacks.membership.threshold",
        "attacks.membership.lira",
        "attacks.membership.rmia",
        "attacks.membership.references",
        "attacks.membership.stacked_mlp",
        "attacks.membership.shokri",
        "attacks.membership.shadowdata",
        "attacks.membership.context",
        "attacks.membership.federated",
        "audit.mia",
    ],
)
def test_membership_doctests(module):
    import doctest
    import importlib

    failed, tried = doctest.testmod(importlib.import_module(f"fedleak.{module}"))
    assert tried > 0 and failed == 0
