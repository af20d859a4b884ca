"""Samplers built on the forward process's exact posterior: DDPM ancestral sampling and DDIM.

With ``x_t = a_t x_0 + s_t eps`` and s < t, the forward transition is
``x_t | x_s ~ N((a_t/a_s) x_s, v I)``, ``v = s_t^2 - (a_t/a_s)^2 s_s^2``, and the posterior is

    q(x_s | x_t, x_0) = N( (a_t/a_s) s_s^2/s_t^2 x_t + a_s v/s_t^2 x_0,  v s_s^2/s_t^2 I ).

For VP at the grid t_i = i/N this is DDPM's ``q(x_{i-1} | x_i, x_0)`` (mean coefficients
sqrt(alpha_i)(1 - abar_{i-1})/(1 - abar_i) and sqrt(abar_{i-1}) beta_i/(1 - abar_i), variance beta~_i);
for VE it is SMLD's ancestral step. Nothing here assumes VP: both samplers hold for VP, sub-VP and VE.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from medidiff.diffusion.predictions import Prediction
from medidiff.diffusion.sde import SDE
from medidiff.errors import ConfigError
from medidiff.samplers.base import Denoiser, Memory, Sampler, randn_like


def posterior_terms(sde: SDE, t: float, t_next: float) -> tuple[float, float, float]:
    """Coefficients of q(x_{t_next} | x_t, x_0): (coef of x_t, coef of x_0, variance)."""
    a_t, s_t = sde.scalar_coefficients(t)
    a_n, s_n = sde.scalar_coefficients(t_next)
    ratio = a_t / a_n
    v = max(s_t**2 - (ratio * s_n) ** 2, 0.0)  # variance of x_t given x_{t_next}
    return ratio * s_n**2 / s_t**2, a_n * v / s_t**2, v * s_n**2 / s_t**2


class DDPMSampler(Sampler):
    """DDPM ancestral sampling: ``x_next ~ q(x_next | x_t, x0_hat)`` on the time grid.

    With ``steps == N`` (the schedule's step count), ``t_start = 1`` and ``sde.t_min = 1/N`` this is exactly
    Ho et al.'s Algorithm 2 with the posterior variance beta~ ("fixed_small"); fewer steps use the same
    posterior between grid times.
    """

    name = "ddpm"

    def step(
        self,
        denoiser: Denoiser,
        x: Tensor,
        pred: Prediction,
        t: float,
        t_next: float,
        generator: torch.Generator | None,
        memory: Memory,
    ) -> tuple[Tensor, Memory]:
        coef_x, coef_x0, var = posterior_terms(self.sde, t, t_next)
        return coef_x * x + coef_x0 * pred.x0 + var**0.5 * randn_like(x, generator), {}


class DDIMSampler(Sampler):
    """DDIM: ``x_next = a_n x0_hat + sqrt(s_n^2 - c^2) eps_hat + c z``, ``c = eta * posterior std``.

    ``eta = 0`` is the deterministic DDIM (first-order solver of the probability-flow ODE), ``eta = 1``
    equals :class:`DDPMSampler`.

    Args:
        eta: stochasticity in [0, 1].
    """

    name = "ddim"

    def __init__(self, sde: SDE, steps: int, eta: float = 0.0, spacing: str | None = None) -> None:
        super().__init__(sde, steps, spacing)
        if not 0.0 <= float(eta) <= 1.0:
            raise ConfigError(f"DDIM eta must be in [0, 1], got {eta}")
        self.eta = float(eta)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "eta": self.eta}

    def step(
        self,
        denoiser: Denoiser,
        x: Tensor,
        pred: Prediction,
        t: float,
        t_next: float,
        generator: torch.Generator | None,
        memory: Memory,
    ) -> tuple[Tensor, Memory]:
        a_n, s_n = self.sde.scalar_coefficients(t_next)
        c = self.eta * posterior_terms(self.sde, t, t_next)[2] ** 0.5
        x_next = a_n * pred.x0 + max(s_n**2 - c**2, 0.0) ** 0.5 * pred.eps
        if c > 0:
            x_next = x_next + c * randn_like(x, generator)
        return x_next, {}
