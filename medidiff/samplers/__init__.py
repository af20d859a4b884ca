"""Unconditional samplers behind one interface (see :mod:`medidiff.samplers.base` for the hook design).

``get_sampler(name, sde, steps, **settings)`` builds one by its CLI name: ``ddpm``, ``ddim``,
``euler_maruyama``, ``pc``, ``heun``, ``dpmpp2m``. ``sampler.config()`` round-trips through it.
"""

from __future__ import annotations

import inspect
from typing import Any

from medidiff.diffusion.sde import SDE
from medidiff.errors import ConfigError
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

SAMPLERS: dict[str, type[Sampler]] = {
    cls.name: cls
    for cls in (DDPMSampler, DDIMSampler, EulerMaruyamaSampler, PCSampler, HeunSampler, DPMSolverPP2MSampler)
}


def get_sampler(name: str, sde: SDE, steps: int, **settings: Any) -> Sampler:
    """Build the sampler called ``name`` with its ``settings`` (unknown names and settings: ConfigError)."""
    cls = SAMPLERS.get(name)
    if cls is None:
        raise ConfigError(f"unknown sampler {name!r} (expected one of {', '.join(SAMPLERS)})")
    allowed = set(inspect.signature(cls.__init__).parameters) - {"self", "sde", "steps"}
    unknown = sorted(set(settings) - allowed)
    if unknown:
        raise ConfigError(
            f"sampler {name!r} has no setting {', '.join(unknown)} (it takes {', '.join(sorted(allowed))})"
        )
    return cls(sde, steps, **settings)


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
