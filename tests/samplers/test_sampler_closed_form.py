"""Closed-form checks of every sampler with the exact denoiser of a Gaussian (or mixture) data distribution.

No training: the "model" is :mod:`medidiff.diffusion.gaussian`. Three kinds of checks:

* exactness against the textbook algorithms (DDPM with N steps, DDIM's update, DDIM(eta=1) = DDPM);
* the deterministic solvers converge to the exact probability-flow ODE solution at their order;
* every sampler, at a modest step count, reproduces the target moments (Monte Carlo, tolerances below).

The moment target is the law of the sampler's output for an exact reverse process: the final step returns
``E[x0 | x_{t_min}]``, whose variance is ``a^2 v^2 / (a^2 v + s^2)`` at t_min (0.9997 v for v = 0.09 on VP).
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from medidiff.diffusion import SDE, VESDE, VPSDE, CosineSchedule, LinearSchedule, SubVPSDE
from medidiff.diffusion.gaussian import DiagonalGaussian, FullCovGaussian, IsotropicGaussianMixture
from medidiff.samplers import get_sampler

SDES: dict[str, SDE] = {"vp": VPSDE(), "subvp": SubVPSDE(), "ve": VESDE()}
EVENT = (1, 4, 4, 4)


def _gaussian_prior(sde: SDE) -> DiagonalGaussian:
    """Per-voxel means in [-0.8, 0.8] and standard deviations in [0.3, 1.0] on a 4^3 volume."""
    gen = torch.Generator().manual_seed(11)
    mean = torch.rand(EVENT, generator=gen, dtype=torch.float64) * 1.6 - 0.8
    std = torch.rand(EVENT, generator=gen, dtype=torch.float64) * 0.7 + 0.3
    return DiagonalGaussian(mean, std**2, sde)


def _coefficients_at(sde: SDE, t: float) -> tuple[float, float]:
    alpha, sigma = sde.coefficients(torch.tensor(t, dtype=torch.float64))
    return float(alpha), float(sigma)


def _noise(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """The samplers' noise draw (float32, then cast), so the textbook loops below see the same numbers."""
    return torch.randn(shape, generator=gen, dtype=torch.float32).double()


# ----------------------------------------------------------------------------- exactness
@pytest.mark.parametrize(
    "schedule", [LinearSchedule(), CosineSchedule(num_steps=100)], ids=["linear", "cosine"]
)
def test_ddpm_with_n_steps_is_ho_et_al_algorithm_2(schedule: LinearSchedule) -> None:
    n = schedule.num_steps
    sde = VPSDE(schedule, t_min=1.0 / n)
    prior = _gaussian_prior(sde)
    shape = (3, *EVENT)
    betas, abar = schedule.discrete_betas(), schedule.discrete_alphas_cumprod()
    gen = torch.Generator().manual_seed(7)
    x = sde.prior_sampling(shape, generator=gen).double()
    for i in range(n, 0, -1):
        eps = prior(x, torch.full((3,), i / n, dtype=torch.float64)).eps
        mean = (x - betas[i - 1] / torch.sqrt(1 - abar[i - 1]) * eps) / torch.sqrt(1 - betas[i - 1])
        if i > 1:
            var = betas[i - 1] * (1 - abar[i - 2]) / (1 - abar[i - 1])
            x = mean + torch.sqrt(var) * _noise(shape, gen)
        else:
            x = mean
    sampled = get_sampler("ddpm", sde, n).sample(
        prior, shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64
    )
    torch.testing.assert_close(sampled, x, rtol=0, atol=1e-9)


def test_ddim_matches_song_et_al_equation_12() -> None:
    """eta = 0.5, 10 steps on the 1000-step chain: grid indices 1000, 889, ..., 1."""
    schedule = LinearSchedule()
    sde = VPSDE(schedule)
    prior = _gaussian_prior(sde)
    sampler = get_sampler("ddim", sde, 10, eta=0.5)
    index = schedule.index_from_t(sampler.time_grid()[:-1])
    assert index.tolist() == [1000 - 111 * k for k in range(10)]
    abar = schedule.discrete_alphas_cumprod()
    shape = (3, *EVENT)
    gen = torch.Generator().manual_seed(8)
    x = sde.prior_sampling(shape, generator=gen).double()
    idx = [int(i) for i in index]
    for k, i in enumerate(idx):
        a_t = abar[i - 1]
        eps = prior(x, torch.full((3,), i / 1000, dtype=torch.float64)).eps
        x0 = (x - torch.sqrt(1 - a_t) * eps) / torch.sqrt(a_t)
        if k == len(idx) - 1:
            x = x0
            break
        a_prev = abar[idx[k + 1] - 1]
        sigma = 0.5 * torch.sqrt((1 - a_prev) / (1 - a_t)) * torch.sqrt(1 - a_t / a_prev)
        x = torch.sqrt(a_prev) * x0 + torch.sqrt(1 - a_prev - sigma**2) * eps + sigma * _noise(shape, gen)
    sampled = sampler.sample(prior, shape, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    torch.testing.assert_close(sampled, x, rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", list(SDES))
def test_ddim_with_eta_one_is_ddpm(name: str) -> None:
    sde = SDES[name]
    prior = _gaussian_prior(sde)
    runs = [
        get_sampler(sampler, sde, 30, **settings).sample(
            prior, (4, *EVENT), generator=torch.Generator().manual_seed(9), dtype=torch.float64
        )
        for sampler, settings in (("ddpm", {}), ("ddim", {"eta": 1.0}))
    ]
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=1e-9)


ODE_CASES: list[tuple[str, dict[str, Any], int]] = [
    ("ddim", {}, 1),
    ("heun", {}, 2),
    ("dpmpp2m", {}, 2),
    ("dpmpp2m", {"spacing": "karras"}, 2),  # uneven log-SNR steps exercise the multistep ratio r
]


@pytest.mark.parametrize(
    ("name", "settings", "order"), ODE_CASES, ids=["ddim", "heun", "dpmpp2m", "dpmpp2m-karras"]
)
@pytest.mark.parametrize("sde_name", ["vp", "ve"])
def test_ode_solvers_converge_to_the_exact_flow_at_their_order(
    name: str, settings: dict[str, Any], order: int, sde_name: str
) -> None:
    """Error against the exact PF-ODE map (then the exact final denoise) shrinks by ~2^order per doubling."""
    sde = SDES[sde_name]
    prior = _gaussian_prior(sde)
    x_start = sde.prior_sampling((64, *EVENT), generator=torch.Generator().manual_seed(10)).double()
    t_min = torch.full((64,), sde.t_min, dtype=torch.float64)
    exact = prior(prior.ode_flow(x_start, 1.0, sde.t_min), t_min).x0
    errors = [
        float(
            (get_sampler(name, sde, steps, **settings).sample(prior, x_start=x_start) - exact)
            .pow(2)
            .mean()
            .sqrt()
        )
        for steps in (41, 81)
    ]
    ratio = errors[0] / errors[1]
    assert 0.75 * 2**order < ratio < 1.3 * 2**order, f"errors {errors}, ratio {ratio:.2f}"


def test_dpmpp2m_multistep_update_is_lu_et_al_algorithm_2() -> None:
    """One 2M step after a step of a different log-SNR length (r != 1), written as in the paper."""
    sde = VPSDE()
    sampler = get_sampler("dpmpp2m", sde, 10)
    prior = _gaussian_prior(sde)
    gen = torch.Generator().manual_seed(17)
    x = torch.randn((2, *EVENT), generator=gen, dtype=torch.float64)
    x0_prev = torch.randn((2, *EVENT), generator=gen, dtype=torch.float64)
    t_prev, t, t_next = 0.8, 0.5, 0.3

    def lam(u: float) -> float:
        a, s = sde.coefficients(torch.tensor(u, dtype=torch.float64))
        return math.log(float(a) / float(s))

    pred = prior(x, torch.full((2,), t, dtype=torch.float64))
    out, memory = sampler.step(prior, x, pred, t, t_next, None, {"x0": x0_prev, "lambda": lam(t_prev)})
    h, h_prev = lam(t_next) - lam(t), lam(t) - lam(t_prev)
    r = h_prev / h
    assert abs(r - 1) > 0.3
    d = (1 + 1 / (2 * r)) * pred.x0 - 1 / (2 * r) * x0_prev
    _, s_t = _coefficients_at(sde, t)
    a_n, s_n = _coefficients_at(sde, t_next)
    expected = (s_n / s_t) * x - a_n * (math.exp(-h) - 1) * d
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    assert torch.equal(memory["x0"], pred.x0) and memory["lambda"] == pytest.approx(lam(t))


# ----------------------------------------------------------------------------- moments
# name, settings, steps, discretisation budget on the relative variance (measured bias x ~1.5; these
# first-order samplers lose or gain O(1/steps) variance: DDPM/DDIM under-, EM/PC/ODE solvers over-disperse).
MOMENT_CASES: list[tuple[str, dict[str, Any], int, float]] = [
    ("ddpm", {}, 250, 0.08),
    ("ddim", {}, 100, 0.08),
    ("euler_maruyama", {}, 100, 0.05),
    ("pc", {}, 100, 0.06),
    ("heun", {}, 25, 0.08),
    ("dpmpp2m", {}, 25, 0.05),
]
N_SAMPLES = 10000


@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize(
    ("name", "settings", "steps", "budget"), MOMENT_CASES, ids=[c[0] for c in MOMENT_CASES]
)
def test_gaussian_per_voxel_moments(
    name: str, settings: dict[str, Any], steps: int, budget: float, sde_name: str
) -> None:
    """N = 10000 draws of a 4^3 volume with independent voxels.

    Tolerances: per-voxel mean within 0.05 (4 standard errors sd/sqrt(N) <= 0.04, plus 0.01 of
    discretisation); per-voxel relative variance within budget + 4 sqrt(2/N) (5.7% Monte Carlo); the
    voxel-averaged relative variance error within budget + 4 sqrt(2/(64 N)) (0.7% Monte Carlo).
    """
    sde = SDES[sde_name]
    prior = _gaussian_prior(sde)
    x = get_sampler(name, sde, steps, **settings).sample(
        prior, (N_SAMPLES, *EVENT), generator=torch.Generator().manual_seed(12)
    )
    x = x.double()
    a, s = _coefficients_at(sde, sde.t_min)
    target_var = a**2 * prior.var**2 / (a**2 * prior.var + s**2)
    assert float((x.mean(0) - prior.mean).abs().max()) <= 0.05
    rel = x.var(0) / target_var - 1
    assert float(rel.abs().max()) <= budget + 4 * math.sqrt(2 / N_SAMPLES), f"per-voxel {rel.abs().max():.3f}"
    assert abs(float(rel.mean())) <= budget + 4 * math.sqrt(2 / (N_SAMPLES * rel.numel())), (
        f"mean {rel.mean():.3f}"
    )


@pytest.mark.parametrize(
    ("name", "settings", "steps", "budget"), MOMENT_CASES, ids=[c[0] for c in MOMENT_CASES]
)
def test_correlated_gaussian_covariance(
    name: str, settings: dict[str, Any], steps: int, budget: float
) -> None:
    """A full 8 x 8 covariance (correlations up to ~0.8) on (1, 2, 2, 2) volumes, VP.

    Tolerances: mean within 0.05; every covariance entry within (budget + 4 sqrt(2/N)) * max variance
    (the standard error of an entry is at most max variance * sqrt(2/N)).
    """
    sde = VPSDE()
    gen = torch.Generator().manual_seed(13)
    shape = (1, 2, 2, 2)
    factor = torch.randn(8, 8, generator=gen, dtype=torch.float64)
    cov = factor @ factor.T / 8 + 0.1 * torch.eye(8, dtype=torch.float64)
    cov = cov / cov.diagonal().max()  # largest variance 1
    corr = cov / torch.outer(cov.diagonal().sqrt(), cov.diagonal().sqrt())
    assert float((corr - torch.eye(8, dtype=torch.float64)).abs().max()) > 0.5  # really correlated
    prior = FullCovGaussian(torch.linspace(-0.6, 0.6, 8, dtype=torch.float64), cov, shape, sde)
    x = get_sampler(name, sde, steps, **settings).sample(
        prior, (N_SAMPLES, *shape), generator=torch.Generator().manual_seed(14)
    )
    flat = x.double().reshape(N_SAMPLES, 8)
    a, s = _coefficients_at(sde, sde.t_min)
    lam, u = prior.eigval, prior.eigvec
    target = (u * (a**2 * lam**2 / (a**2 * lam + s**2))) @ u.T
    assert float((flat.mean(0) - prior.mean).abs().max()) <= 0.05
    err = float((torch.cov(flat.T) - target).abs().max())
    assert err <= budget + 4 * math.sqrt(2 / N_SAMPLES), f"covariance error {err:.3f}"


@pytest.mark.parametrize(
    ("name", "settings", "steps", "budget"), MOMENT_CASES, ids=[c[0] for c in MOMENT_CASES]
)
def test_mixture_weights_are_recovered(
    name: str, settings: dict[str, Any], steps: int, budget: float
) -> None:
    """0.3 N(mu_1, 0.4^2 I) + 0.7 N(mu_2, 0.6^2 I) on 4^3 volumes (means 8 apart), VP, N = 4000.

    Tolerances: weights within 0.04 (4 standard errors sqrt(0.21/N) = 0.029, plus 0.01 of discretisation);
    each component's mean within 0.1 per voxel and its standard deviation within 6%.
    """
    sde = VPSDE()
    gen = torch.Generator().manual_seed(15)
    pattern = torch.randint(0, 2, EVENT, generator=gen).double() * 2 - 1
    means = torch.stack([0.5 * pattern + 0.1, -0.5 * pattern])
    stds = torch.tensor([0.4, 0.6], dtype=torch.float64)
    mixture = IsotropicGaussianMixture(torch.tensor([0.3, 0.7]), means, stds, sde)
    n = 4000
    x = get_sampler(name, sde, steps, **settings).sample(
        mixture, (n, *EVENT), generator=torch.Generator().manual_seed(16)
    )
    x = x.double()
    resp = mixture.responsibilities(x, torch.zeros(n, dtype=torch.float64))
    assert float(resp.max(1).values.min()) > 0.99  # every draw lands clearly in one component
    labels = resp.argmax(1)
    weights = torch.bincount(labels, minlength=2).double() / n
    assert float((weights - mixture.weights).abs().max()) <= 0.04, f"weights {weights.tolist()}"
    for k in range(2):
        members = x[labels == k]
        assert float((members.mean(0) - means[k]).abs().max()) <= 0.1
        std = float((members - means[k]).pow(2).mean().sqrt())
        assert std == pytest.approx(float(stds[k]), rel=0.06)
