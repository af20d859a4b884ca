"""Closed-form checks of the conditioning rules with exact Gaussian priors and linear-Gaussian measurements.

The "model" is the exact denoiser of :mod:`medidiff.diffusion.gaussian`, so the only errors left are the
rule's own approximation, the sampler's discretisation and Monte Carlo. Volumes are (N, 1, 4, 4, 4) on VP.

* White prior (per-voxel mean, common variance v = 0.25): :class:`Projection` is exact. The conditioned
  denoiser equals the exact denoiser of the posterior ``p(x0 | y)`` (checked pointwise), so every sampler run
  with the rule draws the same samples as that sampler run on the exact posterior (checked with one seed), and
  the sample moments match the closed-form posterior within Monte Carlo error.
* Correlated prior (exponential covariance): Projection/DDNM is an approximation; its measured error is
  asserted as a bound, next to the prior's own error for scale.
* RePaint (:class:`Replacement`) and DPS are approximate by design; their measured behaviour is asserted.

Monte Carlo tolerances use 5 standard errors: a mean's is sqrt(var / N), a covariance entry's is at most
max_var * sqrt(2 / N).
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from medidiff.diffusion import VPSDE
from medidiff.diffusion.gaussian import DiagonalGaussian, FullCovGaussian
from medidiff.diffusion.predictions import Prediction
from medidiff.restoration.conditioning import DPS, GDP, Projection, Replacement, solve_gram
from medidiff.restoration.operators import (
    BiasField,
    Compose,
    GaussianBlur,
    Identity,
    IntensityAffine,
    Mask,
    Operator,
    Shifted,
)
from medidiff.samplers import StepContext, get_sampler

SDE = VPSDE()
EVENT = (1, 4, 4, 4)
DIM = 64
PRIOR_VAR = 0.25
N = 4000


def _white_prior() -> DiagonalGaussian:
    gen = torch.Generator().manual_seed(1)
    mean = torch.rand(EVENT, generator=gen, dtype=torch.float64) * 1.6 - 0.8
    return DiagonalGaussian(mean, torch.full(EVENT, PRIOR_VAR, dtype=torch.float64), SDE)


def _correlated_prior() -> FullCovGaussian:
    """Exponential covariance v exp(-d / 2) on the 4^3 grid: neighbours correlate at 0.61."""
    grid = torch.stack(torch.meshgrid(*[torch.arange(4.0)] * 3, indexing="ij"), -1).reshape(DIM, 3)
    cov = PRIOR_VAR * torch.exp(-torch.cdist(grid, grid).double() / 2.0)
    mean = torch.rand(EVENT, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 1.6 - 0.8
    return FullCovGaussian(mean, cov, EVENT, SDE)


def _known() -> torch.Tensor:
    return (torch.rand(EVENT, generator=torch.Generator().manual_seed(2)) > 0.4)[None]


CASES: dict[str, tuple[Operator, float]] = {
    "identity+noise": (Identity(), 0.3),
    "mask": (Mask(_known()), 0.0),
    "mask+noise": (Mask(_known()), 0.2),
    "blur+noise": (GaussianBlur(1.0), 0.1),
}


def _dense(op: Operator) -> torch.Tensor:
    """The (64, 64) matrix of a linear operator on one 4^3 volume (column j = A e_j)."""
    return op(torch.eye(DIM, dtype=torch.float64).reshape(DIM, *EVENT)).reshape(DIM, DIM).T


def _measure(prior: Any, op: Operator, noise: float, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_true, y): a prior draw and its measurement y = A x + noise, each (1, 1, 4, 4, 4)."""
    gen = torch.Generator().manual_seed(seed)
    x_true = prior.sample(1, generator=gen)
    return x_true, op(x_true) + noise * torch.randn(x_true.shape, generator=gen, dtype=torch.float64)


def _posterior(prior: Any, op: Operator, y: torch.Tensor, noise: float) -> FullCovGaussian:
    """The exact posterior p(x0 | y) as a full-covariance Gaussian (rows that measure nothing dropped)."""
    full = (
        prior
        if isinstance(prior, FullCovGaussian)
        else FullCovGaussian(prior.mean, prior.var.reshape(-1).diag(), EVENT, SDE)
    )
    a = _dense(op)
    rows = a.abs().sum(1) > 0
    return full.observe(a[rows], y.reshape(-1)[rows], noise**2)


def _moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    flat = x.double().reshape(x.shape[0], DIM)
    return flat.mean(0), torch.cov(flat.T)


# ----------------------------------------------------------------------------- white prior: exact
def test_gdp_with_nothing_to_fit_is_the_projection() -> None:
    """A known operator (no parameters, e.g. a slice profile estimated beforehand): GDP's denoiser is exactly
    the projection's, and it still records the data misfit of each x0-estimate."""
    op, noise = CASES["blur+noise"]
    prior = _white_prior()
    _, y = _measure(prior, op, noise)
    gdp = GDP(op, y, SDE, [], noise_sigma=noise, prior_variance=PRIOR_VAR)
    plain = Projection(op, y, SDE, noise_sigma=noise, prior_variance=PRIOR_VAR).wrap(prior)
    x = torch.randn((8, *EVENT), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    t = torch.full((8,), 0.3, dtype=torch.float64)
    got, want = gdp.wrap(prior)(x, t), plain(x, t)
    torch.testing.assert_close(got.x0, want.x0, rtol=0, atol=0)
    misfit = float(torch.mean((y - op(prior(x, t).x0)) ** 2))
    assert gdp.history == [pytest.approx(misfit, rel=1e-12)]


@pytest.mark.parametrize("case", list(CASES))
def test_project_is_the_posterior_mean_of_a_white_gaussian(case: str) -> None:
    """``project(m, v)`` is E[x0 | y] for x0 ~ N(m, v I): restore_unknown's consistent first guess."""
    op, noise = CASES[case]
    prior = _white_prior()
    _, y = _measure(prior, op, noise)
    exact = _posterior(prior, op, y, noise).mean.reshape(1, *EVENT)
    got = Projection(op, y, SDE, noise_sigma=noise).project(prior.mean[None], PRIOR_VAR)
    torch.testing.assert_close(got, exact, rtol=0, atol=1e-10 if case != "blur+noise" else 1e-6)
    assert float((got - prior.mean).abs().max()) > 0.05  # the measurement moved it


@pytest.mark.parametrize("case", list(CASES))
def test_projection_denoiser_is_the_exact_posterior_denoiser(case: str) -> None:
    """E[x0 | x_t, y] and E[eps | x_t, y] equal the exact denoiser of p(x0 | y) at every t.

    Pointwise operators are solved exactly (1e-10); the blur's solve is 30 conjugate-gradient iterations
    (1e-6 on x0; eps divides by sigma(t), ~0.03 at the smallest t used here, hence 1e-5).
    """
    op, noise = CASES[case]
    prior = _white_prior()
    _, y = _measure(prior, op, noise)
    exact = _posterior(prior, op, y, noise)
    conditioned = Projection(op, y, SDE, noise_sigma=noise, prior_variance=PRIOR_VAR).wrap(prior)
    tol = 1e-10 if case != "blur+noise" else 1e-6
    gen = torch.Generator().manual_seed(4)
    for t in (0.01, 0.1, 0.4, 0.8, 1.0):
        x = torch.randn((8, *EVENT), generator=gen, dtype=torch.float64)
        times = torch.full((8,), t, dtype=torch.float64)
        got, want = conditioned(x, times), exact(x, times)
        torch.testing.assert_close(got.x0, want.x0, rtol=0, atol=tol)
        torch.testing.assert_close(got.eps, want.eps, rtol=0, atol=10 * tol)


SAMPLERS: list[tuple[str, int, dict[str, Any]]] = [
    ("ddpm", 20, {}),
    ("ddim", 20, {"eta": 0.5}),
    ("euler_maruyama", 20, {}),
    ("pc", 10, {}),
    ("heun", 10, {}),
    ("dpmpp2m", 10, {}),
]


@pytest.mark.parametrize("case", ["mask", "blur+noise"])
@pytest.mark.parametrize(("name", "steps", "settings"), SAMPLERS, ids=[s[0] for s in SAMPLERS])
def test_projection_turns_every_sampler_into_the_posterior_sampler(
    case: str, name: str, steps: int, settings: dict[str, Any]
) -> None:
    """Same seed, same sampler: the rule-wrapped prior and the exact posterior give the same draws.

    This holds for any sampler because the rule only changes the denoiser. 64 draws; differences are the
    blur's conjugate-gradient residual (<= 1e-6).
    """
    op, noise = CASES[case]
    prior = _white_prior()
    _, y = _measure(prior, op, noise)
    rule = Projection(op, y, SDE, noise_sigma=noise, prior_variance=PRIOR_VAR)
    runs = [
        get_sampler(name, SDE, steps, **settings).sample(
            model,
            (64, *EVENT),
            generator=torch.Generator().manual_seed(5),
            conditioning=conditioning,
            dtype=torch.float64,
        )
        for model, conditioning in ((prior, rule), (_posterior(prior, op, y, noise), None))
    ]
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=1e-6)


# sampler, steps, discretisation budget on variances (relative): dpmpp2m at 25 steps and Euler-Maruyama at
# 100 steps over-disperse posterior variances in [0.05, 0.25] by <= 2.5% (tests/samplers measure the same).
# The blur's moments are checked with one sampler: each of its steps costs 30 CG iterations.
MOMENT_CASES = [
    (name, steps, budget, case)
    for name, steps, budget in (("dpmpp2m", 25, 0.03), ("euler_maruyama", 100, 0.03))
    for case in CASES
    if case != "blur+noise" or name == "dpmpp2m"
]


@pytest.mark.parametrize(
    ("name", "steps", "budget", "case"), MOMENT_CASES, ids=[f"{c[0]}-{c[3]}" for c in MOMENT_CASES]
)
def test_projection_samples_have_the_posterior_mean_and_covariance(
    name: str, steps: int, budget: float, case: str
) -> None:
    """N = 4000 posterior draws (2000 for the blur).

    Tolerances: mean within 5 sqrt(max_var / N) + 0.01; every covariance entry within
    (5 sqrt(2 / N) + budget) * max_var. Measured with dpmpp2m: mean errors 0.011 / 0.018 / 0.018 / 0.039
    (tolerances 0.030 / 0.050 / 0.050 / 0.063) and covariance errors 0.006 / 0.021 / 0.021 / 0.024
    (tolerances 0.009 / 0.036 / 0.036 / 0.043) for identity / mask / mask+noise / blur.
    """
    op, noise = CASES[case]
    n = 2000 if case == "blur+noise" else N
    prior = _white_prior()
    _, y = _measure(prior, op, noise)
    exact = _posterior(prior, op, y, noise)
    x = get_sampler(name, SDE, steps).sample(
        prior,
        (n, *EVENT),
        generator=torch.Generator().manual_seed(6),
        conditioning=Projection(op, y, SDE, noise_sigma=noise, prior_variance=PRIOR_VAR),
        dtype=torch.float64,
    )
    mean, cov = _moments(x)
    max_var = float(exact.cov.diagonal().max())
    mean_err = float((mean - exact.mean).abs().max())
    cov_err = float((cov - exact.cov).abs().max())
    assert mean_err <= 5 * math.sqrt(max_var / n) + 0.01, f"mean error {mean_err:.4f}"
    assert cov_err <= (5 * math.sqrt(2 / n) + budget) * max_var, f"covariance error {cov_err:.4f}"
    if case == "mask":  # noiseless: the known voxels come back exactly
        known = op(torch.ones(EVENT, dtype=torch.float64)).bool().expand_as(x)
        torch.testing.assert_close(x[known], y.expand_as(x)[known], rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- correlated prior: approximate
def test_projection_is_approximate_for_a_correlated_prior() -> None:
    """With correlated voxels the rule's r_t^2 = Var[x0 | x_t] of a white prior is wrong, so DDNM is biased.

    Measured with dpmpp2m (25 steps, N = 4000), largest per-voxel posterior-mean error, against the prior
    mean's own error for scale: identity+noise 0.12 (prior 1.02), mask 0.27 (prior 1.20); the largest
    covariance error is 0.007 and 0.061 (posterior variances up to 0.053 and 0.12). The bounds below are
    those numbers plus ~25%. A mean's standard error is <= 0.006, so the bias is real, not noise. The same
    seeded run gives identity+noise 0.150 on an AMX Xeon (float64 reductions run in another order there),
    so its bound is 0.150 plus ~25%.
    """
    prior = _correlated_prior()
    bounds = {"identity+noise": (0.19, 0.009), "mask": (0.34, 0.08)}
    for case, (mean_bound, cov_bound) in bounds.items():
        op, noise = CASES[case]
        _, y = _measure(prior, op, noise)
        exact = _posterior(prior, op, y, noise)
        x = get_sampler("dpmpp2m", SDE, 25).sample(
            prior,
            (N, *EVENT),
            generator=torch.Generator().manual_seed(7),
            conditioning=Projection(op, y, SDE, noise_sigma=noise, prior_variance=PRIOR_VAR),
            dtype=torch.float64,
        )
        mean, cov = _moments(x)
        mean_err = float((mean - exact.mean).abs().max())
        prior_err = float((prior.mean - exact.mean).abs().max())
        assert mean_err <= mean_bound and mean_err < 0.35 * prior_err, f"{case}: mean error {mean_err:.3f}"
        assert float((cov - exact.cov).abs().max()) <= cov_bound, case


# ----------------------------------------------------------------------------- RePaint
def test_repaint_with_resampling_matches_the_posterior_for_a_white_prior() -> None:
    """Mask, noiseless, white prior: the posterior is y on known voxels and the prior elsewhere.

    DDPM with 250 steps, every step of the first half run twice (resampling). Known voxels come back exactly;
    the unknown voxels' means are within 5 standard errors + 0.01 (measured 0.016), their variances within
    5 sqrt(2/N) plus DDPM's discretisation loss (measured -6.4% on average, largest 9.3%; budget 8%).
    """
    prior = _white_prior()
    known = _known()
    _, y = _measure(prior, Mask(known), 0.0)
    x = get_sampler("ddpm", SDE, 250).sample(
        prior,
        (N, *EVENT),
        generator=torch.Generator().manual_seed(8),
        conditioning=Replacement(known, y, resample=2),
        dtype=torch.float64,
    )
    assert torch.equal(x[known.expand_as(x)], y.expand_as(x)[known.expand_as(x)])
    unknown = ~known[0]
    mean_err = (x.mean(0) - prior.mean)[unknown].abs().max()
    assert float(mean_err) <= 5 * math.sqrt(PRIOR_VAR / N) + 0.01
    rel_var = x.var(0)[unknown] / PRIOR_VAR - 1
    assert float(rel_var.abs().max()) <= 5 * math.sqrt(2 / N) + 0.08, f"variance {rel_var.min():.3f}"


def test_repaint_resampling_moves_toward_the_posterior_of_a_correlated_prior() -> None:
    """With correlations the unknown voxels must agree with the known ones; RePaint gets there by resampling.

    DDPM 50 steps, resampling every step (fraction 1). Measured largest posterior-mean error: 0.19 with one
    pass (U = 1) and 0.062 with U = 5 (prior mean: 1.20); bounds are those plus ~25%. The covariance error
    grows meanwhile (0.015 -> 0.044, posterior variances up to 0.12): resampling trades spread for
    agreement at this step count. On an AMX Xeon the same seeded run gives 0.22 and 0.096 (the float64
    reductions and noise kernels take other code paths there), so the second bound is 0.096 plus ~25%.
    """
    prior = _correlated_prior()
    known = _known()
    op = Mask(known)
    _, y = _measure(prior, op, 0.0)
    exact = _posterior(prior, op, y, 0.0)
    errors = []
    for resample in (1, 5):
        x = get_sampler("ddpm", SDE, 50).sample(
            prior,
            (N, *EVENT),
            generator=torch.Generator().manual_seed(9),
            conditioning=Replacement(known, y, resample=resample, resample_fraction=1.0),
            dtype=torch.float64,
        )
        errors.append(float((_moments(x)[0] - exact.mean).abs().max()))
    assert errors[0] <= 0.24 and errors[1] <= 0.12, errors
    assert errors[1] < 0.6 * errors[0], errors


# ----------------------------------------------------------------------------- DPS
def test_dps_moves_samples_toward_the_posterior() -> None:
    """DPS (Chung et al.) on identity+noise and on the mask, correlated prior, DDPM 100 steps, step 0.3.

    DPS is a biased approximation: measured largest posterior-mean error 0.053 (identity) and 0.14 (mask)
    against the prior mean's 1.02 and 1.20, and covariance errors 0.028 and 0.011 (posterior variances
    up to 0.053 and 0.12: the identity case's spread is off by half). The result depends on the step size
    (1.0 overshoots on identity, ~0.5). Asserted: the error is below 20% of the prior's, and the measured
    values plus ~25%.
    """
    prior = _correlated_prior()
    for case, bound in (("identity+noise", 0.07), ("mask", 0.18)):
        op, noise = CASES[case]
        _, y = _measure(prior, op, noise)
        exact = _posterior(prior, op, y, noise)
        x = get_sampler("ddpm", SDE, 100).sample(
            prior,
            (N, *EVENT),
            generator=torch.Generator().manual_seed(10),
            conditioning=DPS(op, y, step_size=0.3),
            dtype=torch.float64,
        )
        err = float((_moments(x)[0] - exact.mean).abs().max())
        prior_err = float((prior.mean - exact.mean).abs().max())
        assert err <= bound and err < 0.2 * prior_err, f"{case}: {err:.3f} vs prior {prior_err:.3f}"


def test_dps_step_of_a_sample_does_not_depend_on_the_batch() -> None:
    """Regression: one norm over the whole batch shrank every sample's step by ~1/sqrt(B)."""
    prior = _white_prior()
    op, noise = CASES["identity+noise"]
    _, y = _measure(prior, op, noise)
    rule = DPS(op, y, step_size=1.0)
    x = torch.randn((8, *EVENT), generator=torch.Generator().manual_seed(11), dtype=torch.float64)

    def step(batch: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            x_in = batch.clone().requires_grad_(True)
            pred = prior(x_in, torch.full((batch.shape[0],), 0.5, dtype=torch.float64))
            ctx = StepContext(0, 10, 0.5, 0.4, x_in, pred, batch.clone(), prior, SDE, None)
            return rule.after_step(ctx)

    torch.testing.assert_close(step(x)[:1], step(x[:1]), rtol=0, atol=1e-12)
    assert float((step(x[:1]) - x[:1]).abs().max()) > 1e-3  # the step does something


# ----------------------------------------------------------------------------- affine operators
def test_projection_of_affine_operators_uses_their_linear_part() -> None:
    """Regression: the conjugate-gradient path applied A's constant term inside the Gram matrix.

    ``Compose([IntensityAffine])`` (solved by CG) must give what the pointwise solve of the same operator
    gives, and a shifted bias field (CG via Compose, exact when alone) likewise.
    """
    prior = _white_prior()
    x = torch.randn((4, *EVENT), generator=torch.Generator().manual_seed(12), dtype=torch.float64)
    t = torch.full((4,), 0.3, dtype=torch.float64)
    coefficients = torch.tensor([0.1, 0.3, -0.2, 0.1] + [0.0] * 16, dtype=torch.float64)
    pairs = [
        (IntensityAffine(1.7, 0.4), Compose([IntensityAffine(1.7, 0.4)])),
        (Shifted(BiasField(3, coefficients), 1.0), Compose([Shifted(BiasField(3, coefficients), 1.0)])),
    ]
    for pointwise, composed in pairs:
        _, y = _measure(prior, pointwise, 0.1)
        want = Projection(pointwise, y, SDE, 0.1, PRIOR_VAR).wrap(prior)(x, t)
        got = Projection(composed, y, SDE, 0.1, PRIOR_VAR).wrap(prior)(x, t)
        torch.testing.assert_close(got.x0, want.x0, rtol=0, atol=1e-8)


def test_solve_gram_conjugate_gradients_solve_the_system() -> None:
    """(r2 A A^T + s^2 I) z = rhs for the blur: the CG solution's residual is tiny."""
    op = GaussianBlur(1.3)
    rhs = torch.randn((3, *EVENT), generator=torch.Generator().manual_seed(13), dtype=torch.float64)
    z = solve_gram(op, rhs, 0.2, 0.01)
    residual = 0.2 * op(op.transpose(z)) + 0.01 * z - rhs
    assert float(residual.abs().max()) <= 1e-6 * float(rhs.abs().max())


def test_prediction_type_is_kept() -> None:
    """The rule returns a Prediction whose eps and x0 satisfy x = a x0 + s eps."""
    prior = _white_prior()
    op, noise = CASES["mask+noise"]
    _, y = _measure(prior, op, noise)
    x = torch.randn((2, *EVENT), generator=torch.Generator().manual_seed(14), dtype=torch.float64)
    t = torch.full((2,), 0.6, dtype=torch.float64)
    pred = Projection(op, y, SDE, noise, PRIOR_VAR).wrap(prior)(x, t)
    assert isinstance(pred, Prediction)
    alpha, sigma = (float(c) for c in SDE.coefficients(torch.tensor(0.6, dtype=torch.float64)))
    torch.testing.assert_close(alpha * pred.x0 + sigma * pred.eps, x, rtol=0, atol=1e-12)
