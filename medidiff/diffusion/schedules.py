"""Noise schedules of the variance-preserving family, in continuous time t in [0, 1].

A schedule is defined by ``log_alpha_bar(t)``. Everything else derives from it:

* the continuous VP-SDE rate ``beta(t) = -d/dt log alpha_bar(t)``;
* the discrete DDPM chain with ``N`` steps: ``alpha_bar_i = alpha_bar(i / N)`` for ``i = 1..N`` and
  ``beta_i = 1 - alpha_bar_i / alpha_bar_{i-1}``.

So the discrete DDPM is exactly the VP-SDE observed at the grid ``t_i = i / N`` (its marginals coincide),
and a step index converts to time exactly: ``t = i / N``. For the linear schedule with
``beta_min=0.1, beta_max=20, N=1000`` the discrete betas are within 2e-4 of DDPM's ``linspace(1e-4, 0.02)``
(``1 - exp(-b)`` instead of ``b``): the same chain up to that first-order difference.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor

from medidiff.registry import Registry


class NoiseSchedule(ABC):
    """``alpha_bar(t)``: the signal power kept at time t. Subclasses define :meth:`log_alpha_bar`."""

    def __init__(self, num_steps: int = 1000) -> None:
        self.num_steps = int(num_steps)

    @abstractmethod
    def log_alpha_bar(self, t: Tensor) -> Tensor:
        """log alpha_bar(t), any shape of t, decreasing from 0 at t=0."""

    @abstractmethod
    def beta(self, t: Tensor) -> Tensor:
        """Continuous rate beta(t) = -d/dt log alpha_bar(t) (>= 0)."""

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON-serialisable settings; ``build_schedule(config)`` rebuilds the schedule."""

    def alpha_bar(self, t: Tensor) -> Tensor:
        return torch.exp(self.log_alpha_bar(t))

    def grid(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """Times of the discrete steps, ``t_i = i / N`` for i = 0..N, shape (N + 1,)."""
        return torch.arange(self.num_steps + 1, dtype=dtype) / self.num_steps

    def discrete_alphas_cumprod(self) -> Tensor:
        """DDPM's ``alphas_cumprod``: alpha_bar(t_i) for i = 1..N, shape (N,), float64."""
        return self.alpha_bar(self.grid()[1:])

    def discrete_betas(self) -> Tensor:
        """DDPM's ``betas`` for i = 1..N, shape (N,), float64: 1 - alpha_bar_i / alpha_bar_{i-1}."""
        log_ab = self.log_alpha_bar(self.grid())
        return -torch.expm1(log_ab[1:] - log_ab[:-1])

    def t_from_index(self, index: Tensor | int) -> Tensor:
        """Time of DDPM step ``index`` (1-based as in the paper, 0 = clean data)."""
        return torch.as_tensor(index, dtype=torch.float64) / self.num_steps

    def index_from_t(self, t: Tensor | float) -> Tensor:
        """Inverse of :meth:`t_from_index` (exact on the grid, fractional between grid points)."""
        index = torch.as_tensor(t, dtype=torch.float64) * self.num_steps
        # (i / N) * N can miss i by an ulp (e.g. N = 200); snap values that are integers up to rounding
        nearest = torch.round(index)
        return torch.where((index - nearest).abs() <= 1e-9, nearest, index)


class LinearSchedule(NoiseSchedule):
    """DDPM's linear betas as the VP-SDE's linear ``beta(t) = beta_min + t (beta_max - beta_min)``."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, num_steps: int = 1000) -> None:
        super().__init__(num_steps)
        self.beta_min = float(beta_min)
        self.beta_max = float(beta_max)

    def log_alpha_bar(self, t: Tensor) -> Tensor:
        return -(self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2)

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def config(self) -> dict[str, Any]:
        return {
            "name": "linear",
            "beta_min": self.beta_min,
            "beta_max": self.beta_max,
            "num_steps": self.num_steps,
        }


class CosineSchedule(NoiseSchedule):
    """Nichol & Dhariwal's cosine schedule, ``alpha_bar = cos^2((u + s) / (1 + s) * pi / 2) / f(0)``.

    The original reaches alpha_bar = 0 at t = 1 (infinite beta) and clips betas. Here time is instead
    rescaled, ``u = t * u_max``, so that alpha_bar(1) = ``alpha_bar_min`` exactly; beta stays finite and
    smooth, and the continuous and discrete views still agree exactly.
    """

    def __init__(self, s: float = 0.008, alpha_bar_min: float = 1e-4, num_steps: int = 1000) -> None:
        super().__init__(num_steps)
        self.s = float(s)
        self.alpha_bar_min = float(alpha_bar_min)
        f0 = math.cos(self.s / (1 + self.s) * math.pi / 2) ** 2
        # cos^2(theta) = alpha_bar_min * f0 at u = u_max
        theta = math.acos(math.sqrt(self.alpha_bar_min * f0))
        self.u_max = theta * 2 / math.pi * (1 + self.s) - self.s
        self._log_f0 = math.log(f0)

    def _theta(self, t: Tensor) -> Tensor:
        return (t * self.u_max + self.s) / (1 + self.s) * (math.pi / 2)

    def log_alpha_bar(self, t: Tensor) -> Tensor:
        # at t = 0 the difference can round to +1e-17, which would make sigma = sqrt(-expm1(.)) NaN
        return (2 * torch.log(torch.cos(self._theta(t))) - self._log_f0).clamp(max=0.0)

    def beta(self, t: Tensor) -> Tensor:
        # d/dt [2 log cos theta] = -2 tan(theta) * dtheta/dt
        return 2 * torch.tan(self._theta(t)) * (self.u_max / (1 + self.s) * math.pi / 2)

    def config(self) -> dict[str, Any]:
        return {
            "name": "cosine",
            "s": self.s,
            "alpha_bar_min": self.alpha_bar_min,
            "num_steps": self.num_steps,
        }


SCHEDULES: Registry[type[NoiseSchedule]] = Registry("noise schedule")
SCHEDULES.register("linear", LinearSchedule)
SCHEDULES.register("cosine", CosineSchedule)


def build_schedule(config: dict[str, Any]) -> NoiseSchedule:
    """Rebuild a schedule from :meth:`NoiseSchedule.config` output (``name``: a :data:`SCHEDULES` entry)."""
    cfg = dict(config)
    return SCHEDULES.build(cfg.pop("name", "linear"), **cfg)  # type: ignore[no-any-return]
