"""RMIA against a direct transcription of the paper's formula: Score(x) = Pr_z[LR(x, z) > gamma] with
LR(x, z) = (p(x|target) / p(x)) / (p(z|target) / p(z)), p(.) the mean over reference models online and
((1 + a) p_OUT + (1 - a)) / 2 offline; the trimmed mean and the offline `a` tuned on a reference model."""

from __future__ import annotations

import pytest
import torch

from fedleak.attacks.membership.rmia import A_GRID, _auc, rmia_scores, trimmed_mean, tune_offline_a


def _paper(px, rx, pz, rz, gamma, online, a, in_x=None, in_z=None):
    def prior(p, ins, j):
        col = p[:, j]
        if online:
            return float(col.mean())
        out = [float(col[k]) for k in range(len(col)) if not ins[k, j]]
        return 0.5 * ((1 + a) * sum(out) / len(out) + (1 - a))

    score = []
    for i in range(len(px)):
        hits = 0
        for j in range(len(pz)):
            lr = (float(px[i]) / prior(rx, in_x, i)) / (float(pz[j]) / prior(rz, in_z, j))
            hits += lr > gamma
        score.append(hits / len(pz))
    return torch.tensor(score, dtype=torch.float64)


@pytest.mark.parametrize("online,gamma,a", [(True, 1.0, 0.0), (True, 2.0, 0.0), (False, 2.0, 0.3), (False, 1.5, 0.8)])
def test_scores_match_the_formula(online, gamma, a):
    g = torch.Generator().manual_seed(1)
    k, n, m = 6, 30, 40
    px, pz = torch.rand(n, generator=g).double(), torch.rand(m, generator=g).double()
    rx, rz = torch.rand(k, n, generator=g).double(), torch.rand(k, m, generator=g).double()
    in_x = torch.zeros(k, n, dtype=torch.bool)
    in_x[: k // 2] = True
    in_x = in_x[torch.randperm(k, generator=g)]
    in_z = torch.rand(k, m, generator=g) < 0.5
    in_z[0] = False  # every z keeps an OUT model
    ours = rmia_scores(px, rx, pz, rz, in_x=in_x, in_z=in_z, online=online, a=a, gamma=gamma)
    want = _paper(px, rx, pz, rz, gamma, online, a, in_x, in_z)
    # ours adds a tie-break below 1 / |z| to the fraction; the fraction itself must be the paper's
    assert torch.equal((ours * m).floor() / m, want)
    assert ((ours - want) < 1 / m).all()


def test_trimmed_mean_cuts_each_end_of_the_kept_values():
    p = torch.tensor([[1.0, 5.0], [2.0, 1.0], [3.0, 9.0], [100.0, 2.0], [4.0, 3.0]])
    assert torch.allclose(trimmed_mean(p, 0.2), torch.tensor([3.0, 10 / 3]))  # one of five cut at each end
    keep = torch.tensor([[True, True], [True, False], [True, True], [False, True], [True, True]])
    # kept: [1, 2, 3, 4] (cut none: 0.2 * 4 < 1) and [5, 9, 2, 3]
    assert torch.allclose(trimmed_mean(p, 0.2, keep), torch.tensor([2.5, 19 / 4]))
    assert torch.allclose(trimmed_mean(p, 0.0), p.mean(0))


def test_offline_a_is_the_grid_value_best_on_the_posing_reference():
    g = torch.Generator().manual_seed(0)
    k, n, m = 8, 200, 100
    in_x = torch.rand(k, n, generator=g) < 0.5
    hard = torch.rand(n, generator=g) * 0.6 + 0.2  # per-record difficulty shared by all models
    rx = (hard + 0.25 * in_x + 0.05 * torch.randn(k, n, generator=g)).clamp(0.01, 0.99)
    rz = (torch.rand(m, generator=g) * 0.6 + 0.2).expand(k, m) + 0.05 * torch.randn(k, m, generator=g)
    a = tune_offline_a(rx, in_x, rz.clamp(0.01, 0.99), None)
    aucs = {
        v: _auc(rmia_scores(rx[0], rx[1:], rz[0], rz[1:], in_x=in_x[1:], online=False, a=v), in_x[0]) for v in A_GRID
    }
    assert a in A_GRID and aucs[a] == max(aucs.values())
    assert aucs[a] > 0.9  # members gain 0.25 against a 0.05 spread: the posing reference's records separate
