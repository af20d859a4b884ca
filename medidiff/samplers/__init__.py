"""Unconditional samplers behind one interface (see :mod:`medidiff.samplers.base` for the hook design).

``get_sampler(name, sde, steps, **settings)`` builds one by its CLI name: ``ddpm``, ``ddim``,
``euler_maruyama``, ``pc``, ``heun``, ``dpmpp2m``. ``sampler.config()`` round-trips through it.
"""

from __future__ import annotations

from typing import Any

from medidiff.diffusion.sde import SDE
from medidiff.registry import Registry
from medidiff.samplers.ancestral import DDIMSampler, DDPMSampler
from medidiff.samplers.base import (
    Conditioning,
    CountingDenoiser,
    Denoiser,
    Sampler,
    StepContext,
    renoise,
    time_grid,
)
from medidiff.samplers.ode import DPMSolverPP2MSampler, HeunSampler
from medidiff.samplers.pc import EulerMaruyamaSampler, PCSampler

SAMPLERS: Registry[type[Sampler]] = Registry("sampler")
for _cls in (DDPMSampler, DDIMSampler, EulerMaruyamaSampler, PCSampler, HeunSampler, DPMSolverPP2MSampler):
    SAMPLERS.register(_cls.name, _cls)


def get_sampler(name: str, sde: SDE, steps: int, **settings: Any) -> Sampler:
    """Build the sampler called ``name`` with its ``settings`` (unknown names and settings: ConfigError)."""
    return SAMPLERS.build(name, sde, steps, **settings)  # type: ignore[no-any-return]


__all__ = [
    "SAMPLERS",
    "Conditioning",
    "CountingDenoiser",
    "DDIMSampler",
    "DDPMSampler",
    "DPMSolverPP2MSampler",
    "Denoiser",
    "EulerMaruyamaSampler",
    "HeunSampler",
    "PCSampler",
    "Sampler",
    "StepContext",
    "get_sampler",
    "renoise",
    "time_grid",
]
