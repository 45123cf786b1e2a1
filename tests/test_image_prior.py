import pytest
import torch

from fedleak.attacks.inversion.image_prior import fit_gaussian_prior
from fedleak.errors import FedleakInputError, NonFiniteError


def _correlated(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(6, 6, generator=g, dtype=torch.float64)
    cov = a @ a.T + 0.1 * torch.eye(6, dtype=torch.float64)
    x = torch.randn(n, 6, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(cov).T + 2.0
    return x.view(n, 1, 2, 3), cov


def test_energy_is_the_mahalanobis_distance_of_the_fitted_gaussian():
    imgs, _ = _correlated(500)
    prior = fit_gaussian_prior(imgs)
    flat = imgs.view(500, -1)
    mean = flat.mean(0)
    prec = torch.linalg.inv(torch.cov(flat.T))
    x = torch.randn(3, 1, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    d = x.view(3, -1) - mean
    want = ((d @ prec) * d).sum(1) / 6
    assert torch.allclose(prior.energy(x), want, rtol=1e-9)


def test_fresh_samples_cost_about_one_and_outliers_far_more():
    imgs, _ = _correlated(4000)
    prior = fit_gaussian_prior(imgs[:2000])
    e = prior.energy(imgs[2000:])
    # chi-square with 6 dof over 6: mean 1, sd of a 2,000-sample mean 0.013; the fit's own error adds a few %
    assert abs(float(e.mean()) - 1.0) < 0.1
    far = prior.mean.view(1, 1, 2, 3) + 3 * (imgs[2000:2100] - prior.mean.view(1, 1, 2, 3))
    assert float(prior.energy(far).mean()) > 7.0  # 3x the deviation: 9x the energy


def test_minimising_the_energy_fills_a_hidden_pixel_from_a_correlated_one():
    # two pixels with correlation 0.99: the energy's minimum over the hidden one, the other fixed, is the
    # conditional mean 0.99 * x1 (what the prior is for: predicting what the update does not show)
    g = torch.Generator().manual_seed(2)
    z = torch.randn(20000, 2, generator=g, dtype=torch.float64)
    x = torch.stack([z[:, 0], 0.99 * z[:, 0] + (1 - 0.99**2) ** 0.5 * z[:, 1]], 1).view(-1, 1, 1, 2)
    prior = fit_gaussian_prior(x)
    hidden = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([hidden], max_iter=50, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        e = prior.energy(torch.cat([torch.tensor([1.5], dtype=torch.float64), hidden]).view(1, 1, 1, 2)).sum()
        e.backward()
        return e

    opt.step(closure)
    assert abs(float(hidden.detach()) - 0.99 * 1.5) < 0.03  # the fit's sampling error on the slope is ~0.001


def test_bad_public_sets_and_shapes_are_input_errors():
    with pytest.raises(FedleakInputError, match="more than 6"):
        fit_gaussian_prior(torch.randn(6, 1, 2, 3))
    bad = torch.randn(50, 1, 2, 3)
    bad[3, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteError):
        fit_gaussian_prior(bad)
    prior = fit_gaussian_prior(torch.randn(50, 1, 2, 3))
    with pytest.raises(FedleakInputError, match="fitted on 6"):
        prior.energy(torch.randn(2, 1, 3, 3))
    assert prior.to_dict() == {"kind": "gaussian", "num_images": 50, "dim": 6}
