"""The conditioning hooks (wrap, after_step with autograd, repeats) steer any sampler without forking it.

With a diagonal Gaussian prior the denoiser acts voxel by voxel, so conditioning some voxels must leave the
others exactly as in the unconditional run: that gives exact checks of each hook.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor

from medidiff.diffusion import SDE, VESDE, VPSDE, Prediction, SubVPSDE, expand_like
from medidiff.diffusion.gaussian import DiagonalGaussian
from medidiff.samplers import Conditioning, CountingDenoiser, Denoiser, StepContext, get_sampler, renoise
from medidiff.samplers.base import Memory

EVENT = (1, 4, 4, 4)
SHAPE = (6, *EVENT)


def _prior(sde: SDE) -> DiagonalGaussian:
    gen = torch.Generator().manual_seed(21)
    mean = torch.rand(EVENT, generator=gen, dtype=torch.float64) * 1.6 - 0.8
    std = torch.rand(EVENT, generator=gen, dtype=torch.float64) * 0.7 + 0.3
    return DiagonalGaussian(mean, std**2, sde)


def _known_mask() -> Tensor:
    mask = torch.zeros(EVENT, dtype=torch.bool)
    mask[..., :2, :] = True  # half of the volume is measured
    return mask


class _ReplaceX0(Conditioning):
    """A DDNM-like rule: the x0-prediction takes the measured values; eps follows, x = a x0 + s eps."""

    def __init__(self, y: Tensor, known: Tensor, sde: SDE) -> None:
        self.y, self.known, self.sde = y, known, sde
        self.wrapped: CountingDenoiser | None = None

    def wrap(self, denoiser: Denoiser) -> Denoiser:
        def conditioned(x: Tensor, t: Tensor) -> Prediction:
            pred = denoiser(x, t)
            alpha, sigma = (expand_like(c, x) for c in self.sde.coefficients(t.double()))
            x0 = torch.where(self.known, self.y, pred.x0)
            return Prediction(eps=(x - alpha * x0) / sigma, x0=x0)

        self.wrapped = CountingDenoiser(conditioned)
        return self.wrapped


class _Replacement(Conditioning):
    """RePaint's rule: known voxels of x_next become the measurement diffused to t_next."""

    def __init__(self, y: Tensor, known: Tensor, n_repeats: int = 1) -> None:
        self.y, self.known, self.n_repeats = y, known, n_repeats

    def after_step(self, ctx: StepContext) -> Tensor:
        target = self.y if ctx.t_next == 0 else renoise(ctx.sde, self.y, 0.0, ctx.t_next, ctx.generator)
        return torch.where(self.known, target, ctx.x_next)

    def repeats(self, index: int, t: float, t_next: float) -> int:
        return self.n_repeats


def _measurement(prior: DiagonalGaussian) -> Tensor:
    return prior.sample(SHAPE[0], torch.Generator().manual_seed(22))


@pytest.mark.parametrize(("name", "settings"), [("ddim", {}), ("heun", {}), ("dpmpp2m", {}), ("pc", {})])
def test_wrapped_denoiser_serves_every_evaluation_and_leaves_other_voxels_alone(
    name: str, settings: dict[str, Any]
) -> None:
    sde = VPSDE()
    prior = _prior(sde)
    y, known = _measurement(prior), _known_mask()
    sampler = get_sampler(name, sde, 8, **settings)
    x_start = sde.prior_sampling(SHAPE, generator=torch.Generator().manual_seed(23)).double()
    rule = _ReplaceX0(y, known, sde)
    inner = CountingDenoiser(prior)
    out = sampler.sample(
        inner, x_start=x_start, conditioning=rule, generator=torch.Generator().manual_seed(1)
    )
    assert rule.wrapped is not None and rule.wrapped.calls == inner.calls == sampler.evaluations()
    assert torch.equal(out[:, known], y[:, known])
    free = sampler.sample(prior, x_start=x_start, generator=torch.Generator().manual_seed(1))
    if name != "pc":  # PC's Langevin step size depends on the whole batch's score norm
        torch.testing.assert_close(out[:, ~known], free[:, ~known], rtol=0, atol=1e-12)


def test_after_step_replacement_fixes_known_voxels_exactly() -> None:
    sde = VPSDE()
    prior = _prior(sde)
    y, known = _measurement(prior), _known_mask()
    sampler = get_sampler("ddim", sde, 20)
    x_start = sde.prior_sampling(SHAPE, generator=torch.Generator().manual_seed(24)).double()
    out = sampler.sample(
        prior,
        x_start=x_start,
        conditioning=_Replacement(y, known),
        generator=torch.Generator().manual_seed(2),
    )
    free = sampler.sample(prior, x_start=x_start)
    assert torch.equal(out[:, known], y[:, known])
    torch.testing.assert_close(out[:, ~known], free[:, ~known], rtol=0, atol=1e-12)


def test_gradient_guidance_sees_x_t_with_the_denoiser_graph() -> None:
    """A DPS-like rule differentiates the step's own evaluation; it works under an outer no_grad too."""
    sde = VPSDE()
    prior = _prior(sde)
    checked: list[float] = []

    class Guidance(Conditioning):
        requires_grad = True

        def after_step(self, ctx: StepContext) -> Tensor:
            assert ctx.x.requires_grad and ctx.pred.x0.grad_fn is not None
            (grad,) = torch.autograd.grad(ctx.pred.x0.sum(), ctx.x)
            alpha, sigma = (float(c) for c in sde.coefficients(torch.tensor(ctx.t, dtype=torch.float64)))
            jacobian = alpha * prior.var / (alpha**2 * prior.var + sigma**2)  # d x0_hat / d x_t, per voxel
            torch.testing.assert_close(grad, jacobian.expand_as(grad), rtol=1e-10, atol=1e-12)
            checked.append(ctx.t)
            return ctx.x_next - 0.0 * grad

    counted = CountingDenoiser(prior)
    sampler = get_sampler("ddpm", sde, 6)
    with torch.no_grad():
        out = sampler.sample(counted, SHAPE, conditioning=Guidance(), dtype=torch.float64)
    assert len(checked) == 6 and counted.calls == sampler.evaluations()  # no extra network call
    assert not out.requires_grad


def test_repeats_renoise_and_restart_the_multistep_memory() -> None:
    sde = VPSDE()
    prior = _prior(sde)
    seen: list[tuple[int, int, float | None]] = []
    sampler = get_sampler("dpmpp2m", sde, 5)
    original_step = sampler.step

    def spy(
        denoiser: Denoiser,
        x: Tensor,
        pred: Prediction,
        t: float,
        t_next: float,
        generator: torch.Generator | None,
        memory: Memory,
    ) -> tuple[Tensor, Memory]:
        seen.append((len(seen), len(memory), memory.get("lambda")))
        return original_step(denoiser, x, pred, t, t_next, generator, memory)

    sampler.step = spy  # type: ignore[method-assign]
    rule = _Replacement(torch.zeros(SHAPE, dtype=torch.float64), torch.zeros(EVENT, dtype=torch.bool), 3)
    counted = CountingDenoiser(prior)
    contexts: list[StepContext] = []
    sampler.sample(counted, SHAPE, conditioning=rule, callback=contexts.append, dtype=torch.float64)
    grid = sampler.time_grid()[:-1].tolist()
    assert counted.times == pytest.approx([t for t in grid for _ in range(3)])
    assert [c.index for c in contexts] == list(range(5)) and all(c.repeat == 2 for c in contexts)
    # first attempt of each step carries the previous step's memory (none at step 0), repeats start afresh
    memory_sizes = [size for _, size, _ in seen]
    assert memory_sizes == [0, 0, 0] + [2, 0, 0] * 3


@pytest.mark.parametrize("sde", [VPSDE(), SubVPSDE(), VESDE()], ids=["vp", "subvp", "ve"])
def test_renoise_is_the_exact_forward_transition(sde: SDE) -> None:
    """x_s from the exact marginal at s, re-noised to t, has the exact marginal at t (MC, 5 std errors)."""
    prior = _prior(sde)
    gen = torch.Generator().manual_seed(25)
    n = 20000
    for s, t in ((0.0, 0.3), (0.2, 0.5), (0.6, 0.61)):
        mean_s, var_s = prior.marginal(s)
        x_s = mean_s + var_s.sqrt() * torch.randn((n, *EVENT), generator=gen, dtype=torch.float64)
        x_t = renoise(sde, x_s, s, t, gen)
        mean_t, var_t = prior.marginal(t)
        assert bool(((x_t.mean(0) - mean_t).abs() <= 5 * (var_t / n).sqrt()).all())
        assert float((x_t.var(0) / var_t - 1).abs().max()) <= 5 * math.sqrt(2 / n)


def test_resampling_keeps_the_prior() -> None:
    """Euler–Maruyama, 100 steps, every step run 3 times with re-noising: the output still has the prior's
    moments (N = 4000: mean within 4 sd/sqrt(N) + 0.01, variance within 5% + 4 sqrt(2/N) per voxel)."""
    sde = VPSDE()
    prior = _prior(sde)

    class Resample(Conditioning):
        def repeats(self, index: int, t: float, t_next: float) -> int:
            return 3

    n = 4000
    x = get_sampler("euler_maruyama", sde, 100).sample(
        prior, (n, *EVENT), conditioning=Resample(), generator=torch.Generator().manual_seed(26)
    )
    x = x.double()
    assert bool(((x.mean(0) - prior.mean).abs() <= 4 * (prior.var / n).sqrt() + 0.01).all())
    assert float((x.var(0) / prior.var - 1).abs().max()) <= 0.05 + 4 * math.sqrt(2 / n)
