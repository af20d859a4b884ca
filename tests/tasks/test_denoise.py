"""Denoising against closed forms with exact Gaussian priors: the noise-level matching t*, Tweedie's
posterior mean, and posterior samples (the task's own logic; the "model" is an exact denoiser)."""

from __future__ import annotations

import math

import pytest
import torch
from exact_priors import DIM, EVENT, N, correlated_prior, diagonal_prior, final_variance, noisy

from medidiff.diffusion import SDE, VESDE, VPSDE, SubVPSDE
from medidiff.diffusion.gaussian import DiagonalGaussian
from medidiff.samplers import CountingDenoiser
from medidiff.tasks.denoise import denoise


# ----------------------------------------------------------------------------- denoise
@pytest.mark.parametrize("sde", [VPSDE(), SubVPSDE(), VESDE()], ids=["vp", "subvp", "ve"])
@pytest.mark.parametrize("noise", [0.05, 0.3, 1.0])
def test_tweedie_at_matched_time_is_the_exact_posterior_mean(sde: SDE, noise: float) -> None:
    """One evaluation at t* (sigma/alpha = noise) gives E[x0 | y] for y = x0 + noise * n, to 1e-5."""
    for prior in (diagonal_prior(sde), correlated_prior(sde)):
        y = noisy(prior, noise)
        counted = CountingDenoiser(prior)
        result = denoise(y, counted, sde, noise)
        if isinstance(prior, DiagonalGaussian):
            exact = prior.observe(1.0, y, noise**2).mean
        else:
            exact = prior.observe(torch.eye(DIM, dtype=torch.float64), y.reshape(-1), noise**2).mean
        torch.testing.assert_close(result.x0.reshape(-1), exact.reshape(-1), rtol=0, atol=1e-5)
        assert result.std is None and counted.calls == 1
        alpha, sigma = sde.coefficients(torch.tensor(result.info["t_star"], dtype=torch.float64))
        assert float(sigma / alpha) == pytest.approx(noise, rel=1e-9)


def test_denoise_samples_have_the_posterior_mean_and_variance() -> None:
    """``samples=2``, N = 4000 independent chains of the same y (noise 0.3), DDPM with 200 steps from t*.

    Per chain the task returns the mean of its 2 draws and their std, so over the chains: the mean of the
    results is the posterior mean (5 standard errors sqrt(v / 2N) + 0.01), their variance is half the target
    variance, and the mean of std^2 is the target variance. The target is the posterior variance after the
    sampler's final denoise at t_min (-1% here). Voxel-averaged relative errors within 5 standard errors
    plus 4% of DDPM discretisation. Measured: mean error 0.007, variance of the means -2.2%, mean std^2
    -1.7% (at 100 steps: -4.0% and -3.5%).
    """
    sde = VPSDE()
    prior = diagonal_prior(sde)
    noise = 0.3
    y = noisy(prior, noise)
    post = prior.observe(1.0, y, noise**2)
    target = final_variance(sde, post.var)
    result = denoise(
        y.expand(N, *EVENT).clone(),
        prior,
        sde,
        noise,
        samples=2,
        steps=200,
        generator=torch.Generator().manual_seed(3),
    )
    assert result.std is not None and result.info["samples"] == 2
    mean_err = (result.x0.mean(0) - post.mean).abs().max()
    assert float(mean_err) <= 5 * math.sqrt(float(post.var.max()) / (2 * N)) + 0.01
    half_var = result.x0.var(0) / (target / 2) - 1
    draw_var = (result.std**2).mean(0) / target - 1
    tol = 5 * math.sqrt(2 / (N * DIM)) + 0.04
    assert abs(float(half_var.mean())) <= tol, f"variance of 2-draw means: {half_var.mean():+.3f}"
    assert abs(float(draw_var.mean())) <= 5 * math.sqrt(4 / (N * DIM)) + 0.04, (
        f"std^2: {draw_var.mean():+.3f}"
    )


def test_denoise_samples_have_the_posterior_covariance_of_acorrelated_prior() -> None:
    """Correlated prior (64 x 64 covariance), noise 0.3, ``samples=2``, DDPM 200 steps, N = 4000 chains.

    The covariance of the 2-draw means over the chains is half the target covariance (the posterior's
    after the final denoise). Tolerance per entry: (5 sqrt(2/N) + 0.04) * max target variance / 2 = 0.0040;
    measured 0.0019 (mean error 0.005).
    """
    sde = VPSDE()
    prior = correlated_prior(sde)
    noise = 0.3
    y = noisy(prior, noise)
    post = prior.observe(torch.eye(DIM, dtype=torch.float64), y.reshape(-1), noise**2)
    a, s = (float(c) for c in sde.coefficients(torch.tensor(sde.t_min, dtype=torch.float64)))
    lam = post.eigval
    target = (post.eigvec * (a**2 * lam**2 / (a**2 * lam + s**2))) @ post.eigvec.T
    result = denoise(
        y.expand(N, *EVENT).clone(),
        prior,
        sde,
        noise,
        samples=2,
        steps=200,
        generator=torch.Generator().manual_seed(8),
    )
    flat = result.x0.reshape(N, DIM)
    max_var = float(target.diagonal().max())
    assert float((flat.mean(0) - post.mean).abs().max()) <= 5 * math.sqrt(max_var / (2 * N)) + 0.01
    cov_err = float((torch.cov(flat.T) - target / 2).abs().max())
    assert cov_err <= (5 * math.sqrt(2 / N) + 0.04) * max_var / 2, f"covariance error {cov_err:.4f}"


def test_denoise_samples_default_steps_under_disperse() -> None:
    """The default (DDPM, 10 steps from t*) keeps the posterior mean but loses variance.

    Each DDPM step uses the point estimate x0_hat, which drops coef_x0^2 Var[x0 | x_t] of variance per
    step; at 10 steps the measured voxel-averaged deficit is 28-31% for noise 0.05-0.5 (30.4% here; 14% at
    25 steps, 7% at 50), so uncertainty maps at the default steps are ~16% low in std. Asserted: the mean
    within 5 standard errors + 0.01 and the variance deficit no worse than 36%.
    """
    sde = VPSDE()
    prior = diagonal_prior(sde)
    noise = 0.3
    y = noisy(prior, noise)
    post = prior.observe(1.0, y, noise**2)
    counted = CountingDenoiser(prior)
    result = denoise(
        y.expand(N, *EVENT).clone(),
        counted,
        sde,
        noise,
        samples=2,
        generator=torch.Generator().manual_seed(4),
    )
    assert counted.calls == 2 * 10
    assert float((result.x0.mean(0) - post.mean).abs().max()) <= 5 * math.sqrt(0.4 / (2 * N)) + 0.01
    assert result.std is not None
    deficit = float(((result.std**2).mean(0) / final_variance(sde, post.var)).mean()) - 1
    assert -0.36 <= deficit <= 0.0, f"{deficit:+.3f}"
