"""The exact denoisers of analytic priors: they must be exact, since every closed-form test relies on them."""

from __future__ import annotations

import math

import pytest
import torch

from medidiff.diffusion import SDE, VESDE, VPSDE, SubVPSDE, expand_like
from medidiff.diffusion.gaussian import DiagonalGaussian, FullCovGaussian, IsotropicGaussianMixture

SDES = {"vp": VPSDE(), "subvp": SubVPSDE(), "ve": VESDE()}
SHAPE = (1, 2, 2, 2)


def _random_cov(dim: int, gen: torch.Generator) -> torch.Tensor:
    a = torch.randn(dim, dim, generator=gen, dtype=torch.float64)
    return a @ a.T / dim + 0.05 * torch.eye(dim, dtype=torch.float64)


def _priors(sde: SDE) -> dict[str, DiagonalGaussian | FullCovGaussian | IsotropicGaussianMixture]:
    gen = torch.Generator().manual_seed(0)
    mean = torch.randn(SHAPE, generator=gen, dtype=torch.float64)
    var = torch.rand(SHAPE, generator=gen, dtype=torch.float64) + 0.1
    means = torch.randn((3, *SHAPE), generator=gen, dtype=torch.float64)
    return {
        "diagonal": DiagonalGaussian(mean, var, sde),
        "full": FullCovGaussian(mean, _random_cov(8, gen), SHAPE, sde),
        "mixture": IsotropicGaussianMixture(
            torch.tensor([0.2, 0.5, 0.3]), means, torch.tensor([0.3, 0.6, 1.0]), sde
        ),
    }


@pytest.mark.parametrize("kind", ["diagonal", "full", "mixture"])
@pytest.mark.parametrize("name", list(SDES))
def test_eps_is_minus_sigma_times_the_autograd_score_and_x0_is_tweedie(name: str, kind: str) -> None:
    sde = SDES[name]
    prior = _priors(sde)[kind]
    t = torch.tensor([sde.t_min, 0.05, 0.3, 0.7, 1.0], dtype=torch.float64)
    x = (
        3 * torch.randn((5, *SHAPE), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ).requires_grad_()
    (score,) = torch.autograd.grad(prior.log_prob(x, t).sum(), x)
    x = x.detach()
    alpha, sigma = (expand_like(c, x) for c in sde.coefficients(t))
    pred = prior(x, t)
    torch.testing.assert_close(pred.eps, -sigma * score, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(pred.x0, (x - sigma * pred.eps) / alpha, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", list(SDES))
def test_diagonal_and_full_covariance_agree_on_a_diagonal_prior(name: str) -> None:
    sde = SDES[name]
    diag = _priors(sde)["diagonal"]
    assert isinstance(diag, DiagonalGaussian)
    full = FullCovGaussian(diag.mean, torch.diag(diag.var.reshape(-1)), SHAPE, sde)
    x = torch.randn((4, *SHAPE), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    t = torch.tensor([0.01, 0.2, 0.6, 0.9], dtype=torch.float64)
    a, b = diag(x, t), full(x, t)
    torch.testing.assert_close(a.eps, b.eps)
    torch.testing.assert_close(a.x0, b.x0)
    (m_d, v_d), (m_f, c_f) = diag.posterior(x, t), full.posterior(x, t)
    torch.testing.assert_close(m_d, m_f)
    torch.testing.assert_close(v_d.reshape(4, -1), torch.diagonal(c_f, dim1=1, dim2=2))
    torch.testing.assert_close(diag.log_prob(x, t), full.log_prob(x, t))


def test_full_covariance_posterior_matches_joint_gaussian_conditioning() -> None:
    """(x0, x_t) is jointly Gaussian, Cov = [[S, a S], [a S, a^2 S + s^2 I]]: condition by a linear solve."""
    sde = VPSDE()
    prior = _priors(sde)["full"]
    assert isinstance(prior, FullCovGaussian)
    x = torch.randn((1, *SHAPE), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    t = 0.3
    alpha, sigma = (float(c) for c in sde.coefficients(torch.tensor(t, dtype=torch.float64)))
    cov, mu = prior.cov, prior.mean
    k = torch.linalg.solve(alpha**2 * cov + sigma**2 * torch.eye(8, dtype=torch.float64), alpha * cov).T
    mean = mu + k @ (x.reshape(-1) - alpha * mu)
    post_cov = cov - k @ (alpha * cov)
    got_mean, got_cov = prior.posterior(x, torch.tensor([t], dtype=torch.float64))
    torch.testing.assert_close(got_mean.reshape(-1), mean)
    torch.testing.assert_close(got_cov[0], post_cov)


@pytest.mark.parametrize("kind", ["diagonal", "full"])
@pytest.mark.parametrize("name", list(SDES))
def test_ode_flow_follows_the_probability_flow_ode(name: str, kind: str) -> None:
    """d/ds flow(x, t, s) at s = t equals the PF-ODE velocity f x - g^2 score / 2; flows compose."""
    sde = SDES[name]
    prior = _priors(sde)[kind]
    assert isinstance(prior, DiagonalGaussian | FullCovGaussian)
    x = 2 * torch.randn((3, *SHAPE), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    for t in (0.05, 0.4, 0.8):
        h = 1e-5
        velocity = (prior.ode_flow(x, t, t + h) - prior.ode_flow(x, t, t - h)) / (2 * h)
        t64 = torch.tensor(t, dtype=torch.float64)
        _, sigma = sde.coefficients(t64)
        f, g = float(sde.drift_coefficient(t64)), float(sde.diffusion(t64))
        eps = prior(x, torch.full((3,), t, dtype=torch.float64)).eps
        expected = f * x + 0.5 * g**2 * eps / float(sigma)
        torch.testing.assert_close(velocity, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        prior.ode_flow(prior.ode_flow(x, 0.9, 0.4), 0.4, 0.01), prior.ode_flow(x, 0.9, 0.01)
    )


def test_sampling_reproduces_the_parameters() -> None:
    """MC checks with stated tolerances (5 standard errors)."""
    sde = VPSDE()
    priors = _priors(sde)
    gen = torch.Generator().manual_seed(5)
    n = 40000
    full = priors["full"]
    assert isinstance(full, FullCovGaussian)
    draws = full.sample(n, gen)
    assert draws.shape == (n, *SHAPE)
    flat = draws.reshape(n, -1)
    sd = full.cov.diagonal().sqrt()
    assert bool(((flat.mean(0) - full.mean).abs() <= 5 * sd / math.sqrt(n)).all())
    emp = torch.cov(flat.T)
    assert float((emp - full.cov).abs().max()) <= 5 * float(sd.max()) ** 2 * math.sqrt(2 / n)
    mixture = priors["mixture"]
    assert isinstance(mixture, IsotropicGaussianMixture)
    x, labels = mixture.sample(n, gen)
    freq = torch.bincount(labels, minlength=3).double() / n
    assert bool(((freq - mixture.weights).abs() <= 5 * (0.25 / n) ** 0.5).all())
    # responsibilities at t = 0 recover the labels of well-separated draws almost always
    resp = mixture.responsibilities(x, torch.zeros(n, dtype=torch.float64))
    assert float((resp.argmax(1) == labels).double().mean()) > 0.9


def test_diagonal_observe_is_gaussian_conditioning() -> None:
    """Element-wise y = gain x0 + noise: compare with the full-covariance conditioning on A = diag(gain)."""
    sde = VPSDE()
    diag = _priors(sde)["diagonal"]
    assert isinstance(diag, DiagonalGaussian)
    gen = torch.Generator().manual_seed(6)
    y = torch.randn(SHAPE, generator=gen, dtype=torch.float64)
    gain = torch.rand(SHAPE, generator=gen, dtype=torch.float64) + 0.5
    post = diag.observe(gain, y, 0.3)
    full = FullCovGaussian(diag.mean, torch.diag(diag.var.reshape(-1)), SHAPE, sde)
    ref = full.observe(torch.diag(gain.reshape(-1)), y.reshape(-1), 0.3)
    torch.testing.assert_close(post.mean.reshape(-1), ref.mean)
    torch.testing.assert_close(post.var.reshape(-1), torch.diagonal(ref.cov))
    # inpainting: noiseless mask; known elements become y, unknown ones keep the prior
    mask = torch.zeros(SHAPE, dtype=torch.float64)
    mask.view(-1)[:3] = 1.0
    inpaint = diag.observe(mask, y, 0.0)
    known = mask.bool()
    torch.testing.assert_close(inpaint.mean[known], y[known])
    assert bool((inpaint.var[known] == 0).all())
    torch.testing.assert_close(inpaint.mean[~known], diag.mean[~known])
    torch.testing.assert_close(inpaint.var[~known], diag.var[~known])
    rows = torch.eye(8, dtype=torch.float64)[:3]
    ref_inpaint = full.observe(rows, y.reshape(-1)[:3], 0.0)
    torch.testing.assert_close(inpaint.mean.reshape(-1), ref_inpaint.mean)
    torch.testing.assert_close(inpaint.var.reshape(-1), torch.diagonal(ref_inpaint.cov), rtol=0, atol=1e-12)
