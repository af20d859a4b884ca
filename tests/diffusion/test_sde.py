"""SDE marginals equal their closed forms (forward simulation, moment ODEs); the noise-ratio inverse."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from medidiff.diffusion import SDE, VESDE, VPSDE, CosineSchedule, SubVPSDE, build_sde
from medidiff.errors import ConfigError

SDES = {
    "vp": VPSDE(),
    "vp-cosine": VPSDE(CosineSchedule()),
    "subvp": SubVPSDE(),
    "ve": VESDE(),
}


@pytest.fixture(params=list(SDES), ids=list(SDES))
def sde(request: pytest.FixtureRequest) -> SDE:
    return SDES[request.param]


def _scalar(fn: object, t: float) -> float:
    return float(fn(torch.tensor(t, dtype=torch.float64)))  # type: ignore[operator]


def test_marginals_match_euler_maruyama_simulation_of_the_forward_sde(sde: SDE) -> None:
    """x_0 ~ N(0.5, 0.25) on (M, 1, 2, 2, 2) volumes, dx = f x dt + g dw with 1000 Euler–Maruyama steps.

    Tolerances: M * 8 = 16000 independent values give a relative std error of the variance of
    sqrt(2 / 16000) = 1.1% and of the mean of sqrt(var / 16000); we allow 4.5 standard errors plus 1.5%
    for Euler–Maruyama's O(dt) bias (beta dt <= 0.02 per step).
    """
    gen = torch.Generator().manual_seed(0)
    m0, v0, count, n_steps = 0.5, 0.25, 2000, 1000
    x = m0 + math.sqrt(v0) * torch.randn((count, 1, 2, 2, 2), generator=gen, dtype=torch.float64)
    dt = 1.0 / n_steps
    checks = {100: 0.1, 500: 0.5, 1000: 1.0}
    n_values = x.numel()
    for k in range(n_steps):
        t = torch.tensor(k * dt, dtype=torch.float64)
        drift, g = sde.sde(x, t.expand(count))
        x = x + drift * dt + float(g[0]) * math.sqrt(dt) * torch.randn(x.shape, generator=gen, dtype=x.dtype)
        if k + 1 in checks:
            t_check = checks[k + 1]
            alpha, sigma = (float(c) for c in sde.coefficients(torch.tensor(t_check, dtype=torch.float64)))
            var = alpha**2 * v0 + sigma**2
            mean_tol = 4.5 * math.sqrt(var / n_values) + 0.015 * abs(alpha * m0)
            assert float(x.mean()) == pytest.approx(alpha * m0, abs=mean_tol), f"mean at t={t_check}"
            var_tol = 4.5 * math.sqrt(2 / n_values) + 0.015
            assert float(x.var()) == pytest.approx(var, rel=var_tol), f"variance at t={t_check}"


@pytest.mark.parametrize("v0", [0.0, 0.3])
def test_marginals_solve_the_moment_odes(sde: SDE, v0: float) -> None:
    """dm/dt = f m and dv/dt = 2 f v + g^2 integrated to 1e-11 reproduce alpha m0 and alpha^2 v0 + sigma^2."""
    m0 = 0.7

    def rhs(t: float, y: np.ndarray) -> list[float]:
        f, g = _scalar(sde.drift_coefficient, t), _scalar(sde.diffusion, t)
        return [f * y[0], 2 * f * y[1] + g**2]

    t_eval = np.linspace(0.0, 1.0, 21)
    sol = solve_ivp(rhs, (0.0, 1.0), [m0, v0], t_eval=t_eval, rtol=1e-11, atol=1e-13, method="DOP853")
    assert sol.success
    alpha, sigma = sde.coefficients(torch.as_tensor(t_eval))
    np.testing.assert_allclose(sol.y[0], alpha.numpy() * m0, rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(sol.y[1], alpha.numpy() ** 2 * v0 + sigma.numpy() ** 2, rtol=1e-7, atol=1e-12)


def test_marginal_prob_matches_coefficients_on_volumes(sde: SDE) -> None:
    x0 = torch.randn(3, 1, 4, 5, 6, dtype=torch.float64)
    t = torch.tensor([0.1, 0.5, 1.0], dtype=torch.float64)
    mean, std = sde.marginal_prob(x0, t)
    alpha, sigma = sde.coefficients(t)
    assert mean.shape == x0.shape and std.shape == (3,)
    torch.testing.assert_close(mean, alpha.reshape(3, 1, 1, 1, 1) * x0)
    torch.testing.assert_close(std, sigma)


def test_t_from_noise_ratio_inverts_noise_ratio(sde: SDE) -> None:
    t = torch.cat(
        [torch.tensor([sde.t_min, 1.0]), torch.rand(50, generator=torch.Generator().manual_seed(1))]
    )
    t = t.clamp(sde.t_min, 1.0).to(torch.float64)
    back = sde.t_from_noise_ratio(sde.noise_ratio(t))
    torch.testing.assert_close(back, t, rtol=0, atol=1e-12)
    # outside the SDE's range the time clips to [t_min, T]
    low, high = sde.noise_ratio(torch.tensor([sde.t_min, 1.0], dtype=torch.float64))
    assert float(sde.t_from_noise_ratio(float(low) / 10)) == pytest.approx(sde.t_min, abs=1e-12)
    assert float(sde.t_from_noise_ratio(float(high) * 10)) == pytest.approx(1.0, abs=1e-12)


def test_prior_sampling_has_the_marginal_std_at_T_and_is_reproducible(sde: SDE) -> None:
    draw = sde.prior_sampling((4000, 1, 2, 2, 2), generator=torch.Generator().manual_seed(3))
    again = sde.prior_sampling((4000, 1, 2, 2, 2), generator=torch.Generator().manual_seed(3))
    _, sigma = sde.coefficients(torch.tensor(1.0, dtype=torch.float64))
    assert torch.equal(draw, again)
    assert float(draw.std()) == pytest.approx(float(sigma), rel=4 * math.sqrt(0.5 / draw.numel()))


def test_sde_config_round_trip_and_unknown_name(sde: SDE) -> None:
    rebuilt = build_sde(sde.config())
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    assert type(rebuilt) is type(sde) and rebuilt.config() == sde.config()
    for mine, theirs in zip(rebuilt.coefficients(t), sde.coefficients(t), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=0)
    with pytest.raises(ConfigError, match="unknown SDE"):
        build_sde({"name": "cld"})


def test_clean_data_at_t0(sde: SDE) -> None:
    """x_0 is the data: alpha(0) = 1, sigma(0) = 0 (the cosine schedule once rounded to sigma(0) = NaN)."""
    alpha, sigma = sde.coefficients(torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(alpha, torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-14)
    torch.testing.assert_close(sigma, torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-7)
