"""What every sampler promises: names, config round trip, time grid, shapes, determinism, evaluation count."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import torch

from medidiff.diffusion import VESDE, VPSDE, SubVPSDE
from medidiff.diffusion.gaussian import DiagonalGaussian
from medidiff.errors import ConfigError
from medidiff.samplers import SAMPLERS, CountingDenoiser, StepContext, get_sampler, time_grid

CASES: list[tuple[str, dict[str, Any]]] = [
    ("ddpm", {}),
    ("ddim", {}),
    ("ddim", {"eta": 0.5}),
    ("euler_maruyama", {}),
    ("pc", {}),
    ("pc", {"predictor": "euler_maruyama", "corrector_steps": 2, "snr": 0.1}),
    ("pc", {"predictor": "none"}),
    ("heun", {}),
    ("dpmpp2m", {}),
]
IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" if kw else name for name, kw in CASES]
STOCHASTIC = {"ddpm", "euler_maruyama", "pc"}
SHAPE = (2, 1, 4, 4, 4)


def _prior(sde: VPSDE | VESDE) -> DiagonalGaussian:
    gen = torch.Generator().manual_seed(0)
    return DiagonalGaussian(
        torch.randn(SHAPE[1:], generator=gen), torch.rand(SHAPE[1:], generator=gen) + 0.2, sde
    )


def test_registry_has_the_cli_names() -> None:
    assert set(SAMPLERS) == {"ddpm", "ddim", "euler_maruyama", "pc", "heun", "dpmpp2m"}
    for name, cls in SAMPLERS.items():
        assert cls.name == name


@pytest.mark.parametrize(("name", "settings"), CASES, ids=IDS)
def test_config_round_trips_through_get_sampler(name: str, settings: dict[str, Any]) -> None:
    sde = VPSDE()
    sampler = get_sampler(name, sde, 7, **settings)
    config = json.loads(json.dumps(sampler.config()))
    assert config["name"] == name and config["steps"] == 7
    rebuilt = get_sampler(sde=sde, **config)
    assert type(rebuilt) is type(sampler) and rebuilt.config() == sampler.config()
    for key, value in settings.items():
        assert config[key] == value


def test_bad_names_and_settings_raise_config_errors() -> None:
    sde = VPSDE()
    with pytest.raises(ConfigError, match="unknown sampler 'euler'"):
        get_sampler("euler", sde, 10)
    with pytest.raises(ConfigError, match="has no setting eta"):
        get_sampler("heun", sde, 10, eta=0.3)
    with pytest.raises(ConfigError, match="at least 1"):
        get_sampler("ddim", sde, 0)
    with pytest.raises(ConfigError, match="eta"):
        get_sampler("ddim", sde, 10, eta=1.5)
    with pytest.raises(ConfigError, match="spacing"):
        get_sampler("ddim", sde, 10, spacing="quadratic")
    with pytest.raises(ConfigError, match="predictor"):
        get_sampler("pc", sde, 10, predictor="ancestral")
    with pytest.raises(ConfigError, match="snr"):
        get_sampler("pc", sde, 10, snr=0.0)


@pytest.mark.parametrize("spacing", ["time", "logsnr", "karras"])
@pytest.mark.parametrize("sde", [VPSDE(), SubVPSDE(), VESDE()], ids=["vp", "subvp", "ve"])
def test_time_grid(sde: VPSDE, spacing: str) -> None:
    for t_start in (1.0, 0.37):
        grid = time_grid(sde, 12, t_start, spacing)
        assert grid.shape == (13,) and grid.dtype == torch.float64
        assert float(grid[0]) == t_start and float(grid[-2]) == sde.t_min and float(grid[-1]) == 0.0
        assert bool((grid[1:] < grid[:-1]).all())
        ratio = sde.noise_ratio(grid[:-1])
        if spacing == "time":
            steps = grid[:-2] - grid[1:-1]
        elif spacing == "logsnr":
            steps = torch.log(ratio[:-1]) - torch.log(ratio[1:])
        else:
            steps = ratio[:-1] ** (1 / 7) - ratio[1:] ** (1 / 7)
        torch.testing.assert_close(steps, steps.mean().expand_as(steps), rtol=1e-8, atol=0)
    with pytest.raises(ValueError, match="beyond"):
        time_grid(sde, 12, 1.5, spacing)
    # nothing to integrate: one final denoise
    assert time_grid(sde, 12, sde.t_min, spacing).tolist() == [sde.t_min, 0.0]
    assert time_grid(sde, 1, 0.5, spacing).tolist() == [0.5, 0.0]


@pytest.mark.parametrize(("name", "settings"), CASES, ids=IDS)
def test_shapes_dtypes_determinism_and_evaluation_count(name: str, settings: dict[str, Any]) -> None:
    sde = VPSDE()
    prior = _prior(sde)
    sampler = get_sampler(name, sde, 6, **settings)
    counted = CountingDenoiser(prior)
    out = sampler.sample(counted, SHAPE, generator=torch.Generator().manual_seed(1))
    assert out.shape == SHAPE and out.dtype == torch.float32 and bool(torch.isfinite(out).all())
    assert counted.calls == sampler.evaluations()
    assert counted.times[0] == pytest.approx(1.0, abs=1e-6)
    assert counted.times[-1] == pytest.approx(sde.t_min, rel=1e-5)
    again = sampler.sample(prior, SHAPE, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, again)
    other = sampler.sample(prior, SHAPE, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(out, other)
    as64 = sampler.sample(prior, SHAPE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert as64.dtype == torch.float64
    # float32 and float64 runs draw the same noise (prior in float32), so they agree to float32 precision
    assert float((as64 - out.double()).abs().max()) < 1e-3


def test_stochastic_samplers_use_the_generator_after_the_prior_draw() -> None:
    """From the same x_T, stochastic samplers differ with the seed and deterministic ones do not."""
    sde = VPSDE()
    prior = _prior(sde)
    x_start = sde.prior_sampling(SHAPE, generator=torch.Generator().manual_seed(0))
    for name, settings in CASES:
        sampler = get_sampler(name, sde, 5, **settings)
        runs = [
            sampler.sample(prior, x_start=x_start, generator=torch.Generator().manual_seed(s)) for s in (1, 2)
        ]
        stochastic = name in STOCHASTIC or settings.get("eta", 0) > 0
        assert torch.equal(runs[0], runs[1]) is not stochastic, name


def test_start_part_way_from_a_given_x() -> None:
    sde = VPSDE()
    prior = _prior(sde)
    counted = CountingDenoiser(prior)
    sampler = get_sampler("ddim", sde, 4)
    x_start = torch.zeros(SHAPE, dtype=torch.float64)
    out = sampler.sample(counted, x_start=x_start, t_start=0.3)
    assert out.dtype == torch.float64 and out.shape == SHAPE
    assert counted.times == pytest.approx(time_grid(sde, 4, 0.3)[:-1].tolist())
    with pytest.raises(ValueError, match="x_start"):
        sampler.sample(prior, SHAPE, t_start=0.3)
    with pytest.raises(ValueError, match="shape"):
        sampler.sample(prior)


def test_callback_sees_every_step() -> None:
    sde = VPSDE()
    seen: list[StepContext] = []
    sampler = get_sampler("dpmpp2m", sde, 5)
    out = sampler.sample(_prior(sde), SHAPE, generator=torch.Generator().manual_seed(0), callback=seen.append)
    assert [c.index for c in seen] == list(range(5)) and all(c.total == 5 for c in seen)
    assert seen[-1].t_next == 0.0 and torch.equal(seen[-1].x_next, out)
    assert [c.t for c in seen] == pytest.approx(sampler.time_grid()[:-1].tolist())
    assert math.isclose(seen[0].t, 1.0)
