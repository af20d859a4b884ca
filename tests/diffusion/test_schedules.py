"""Noise schedules: the discrete DDPM chain is the VP-SDE on the grid t_i = i/N, and beta = -d log abar/dt."""

from __future__ import annotations

import pytest
import torch

from medidiff.diffusion import VPSDE, CosineSchedule, LinearSchedule, NoiseSchedule, build_schedule
from medidiff.errors import ConfigError

SCHEDULES = {
    "linear": LinearSchedule(),
    "linear-200": LinearSchedule(beta_min=0.05, beta_max=15.0, num_steps=200),
    "cosine": CosineSchedule(),
    "cosine-37": CosineSchedule(s=0.01, alpha_bar_min=1e-3, num_steps=37),
}


@pytest.fixture(params=list(SCHEDULES), ids=list(SCHEDULES))
def schedule(request: pytest.FixtureRequest) -> NoiseSchedule:
    return SCHEDULES[request.param]


def test_discrete_alphas_cumprod_are_vp_alpha_squared_on_the_grid(schedule: NoiseSchedule) -> None:
    n = schedule.num_steps
    sde = VPSDE(schedule, t_min=1.0 / n)
    times = schedule.t_from_index(torch.arange(1, n + 1))
    alpha, sigma = sde.coefficients(times)
    abar = schedule.discrete_alphas_cumprod()
    assert abar.shape == (n,)
    torch.testing.assert_close(abar, alpha**2, rtol=1e-12, atol=0)
    torch.testing.assert_close(1 - abar, sigma**2, rtol=1e-12, atol=1e-15)
    # DDPM's own definition: alphas_cumprod = cumprod(1 - betas)
    torch.testing.assert_close(torch.cumprod(1 - schedule.discrete_betas(), 0), abar, rtol=1e-10, atol=0)
    assert bool((schedule.discrete_betas() > 0).all()) and bool((schedule.discrete_betas() < 1).all())


def test_step_index_and_time_convert_exactly(schedule: NoiseSchedule) -> None:
    n = schedule.num_steps
    index = torch.arange(n + 1)
    times = schedule.t_from_index(index)
    assert torch.equal(times, index.to(torch.float64) / n)
    assert torch.equal(schedule.index_from_t(times), index.to(torch.float64))
    assert torch.equal(schedule.grid(), times)
    # between grid points the index is fractional, not snapped
    assert float(schedule.index_from_t(0.5 / n)) == pytest.approx(0.5, abs=1e-12)


def test_linear_schedule_is_ddpm_linspace_to_first_order() -> None:
    ddpm_betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    diff = (LinearSchedule().discrete_betas() - ddpm_betas).abs()
    # beta_i = 1 - exp(-integral of beta(t)) differs from DDPM's beta by ~beta^2/2 <= 2e-4 at the end
    assert float(diff.max()) <= 2.1e-4
    assert float(diff[:100].max()) <= 2e-5


def test_beta_is_minus_derivative_of_log_alpha_bar(schedule: NoiseSchedule) -> None:
    t = torch.linspace(0.01, 0.99, 41, dtype=torch.float64)
    h = 1e-6
    finite_diff = -(schedule.log_alpha_bar(t + h) - schedule.log_alpha_bar(t - h)) / (2 * h)
    torch.testing.assert_close(schedule.beta(t), finite_diff, rtol=1e-6, atol=1e-8)


def test_alpha_bar_decreases_from_one(schedule: NoiseSchedule) -> None:
    abar = schedule.alpha_bar(torch.linspace(0, 1, 101, dtype=torch.float64))
    assert float(abar[0]) == pytest.approx(1.0, abs=1e-14)
    assert bool((abar[1:] < abar[:-1]).all())
    assert float(abar[-1]) < 1e-2


def test_cosine_schedule_reaches_alpha_bar_min_exactly() -> None:
    schedule = CosineSchedule(alpha_bar_min=1e-4)
    assert float(schedule.alpha_bar(torch.tensor(1.0, dtype=torch.float64))) == pytest.approx(1e-4, rel=1e-10)


def test_schedule_config_round_trip_and_unknown_name(schedule: NoiseSchedule) -> None:
    rebuilt = build_schedule(schedule.config())
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    assert rebuilt.config() == schedule.config()
    torch.testing.assert_close(rebuilt.log_alpha_bar(t), schedule.log_alpha_bar(t), rtol=0, atol=0)
    with pytest.raises(ConfigError, match="unknown noise schedule"):
        build_schedule({"name": "sigmoid"})
