"""Forward SDEs ``dx = f(t) x dt + g(t) dw`` with Gaussian perturbation kernels.

All SDEs here have a linear drift, so the marginal is ``x_t = alpha(t) x_0 + sigma(t) eps``.
Samplers need only this interface: :meth:`SDE.coefficients`, :meth:`SDE.drift_coefficient`,
:meth:`SDE.diffusion`, :meth:`SDE.prior_sampling` and the time range.

* :class:`VPSDE` is the continuous view of DDPM: alpha^2 = alpha_bar(t), sigma^2 = 1 - alpha_bar(t).
* :class:`SubVPSDE`: alpha^2 = alpha_bar(t), sigma = 1 - alpha_bar(t).
* :class:`VESDE`: alpha = 1, sigma^2 = sigma_min^2 (r^(2t) - 1), r = sigma_max / sigma_min (exact kernel).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor

from medidiff.diffusion.predictions import expand_like
from medidiff.diffusion.schedules import LinearSchedule, NoiseSchedule, build_schedule
from medidiff.registry import Registry


class SDE(ABC):
    """A linear-drift forward SDE on [t_min, 1]."""

    T: float = 1.0

    def __init__(self, t_min: float) -> None:
        self.t_min = float(t_min)

    @abstractmethod
    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(alpha(t), sigma(t)) of the kernel ``x_t = alpha x_0 + sigma eps``; same shape as t."""

    @abstractmethod
    def drift_coefficient(self, t: Tensor) -> Tensor:
        """f(t) with drift f(x, t) = f(t) x; same shape as t."""

    @abstractmethod
    def diffusion(self, t: Tensor) -> Tensor:
        """g(t); same shape as t."""

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON-serialisable settings; ``build_sde(config)`` rebuilds the SDE."""

    # Derived quantities --------------------------------------------------------------------------
    def scalar_coefficients(self, t: float) -> tuple[float, float]:
        """(alpha(t), sigma(t)) at one time, as Python floats computed in float64 (samplers, tasks)."""
        alpha, sigma = self.coefficients(torch.tensor(float(t), dtype=torch.float64))
        return float(alpha), float(sigma)

    def marginal_prob(self, x0: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and std of q(x_t | x_0). x0: (B, ...); t: (B,). Returns mean like x0, std (B,)."""
        alpha, sigma = self.coefficients(t)
        return expand_like(alpha, x0) * x0, sigma

    def sde(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Drift f(x, t) (like x) and diffusion g(t) (B,) of the forward SDE."""
        return expand_like(self.drift_coefficient(t), x) * x, self.diffusion(t)

    def prior_sampling(
        self, shape: tuple[int, ...], generator: torch.Generator | None = None, device: Any = None
    ) -> Tensor:
        """A draw from the (data-independent) marginal at t = T, shape ``shape``, float32."""
        _, sigma = self.coefficients(torch.tensor(self.T, dtype=torch.float64))
        z = torch.randn(shape, generator=generator, device=device, dtype=torch.float32)
        return z * float(sigma)

    def noise_ratio(self, t: Tensor) -> Tensor:
        """sigma(t) / alpha(t): the std of Gaussian noise on x_0 that x_t / alpha(t) carries."""
        alpha, sigma = self.coefficients(t)
        return sigma / alpha

    def t_from_noise_ratio(self, ratio: Tensor | float) -> Tensor:
        """The time t (float64) at which sigma/alpha equals ``ratio`` (bisection; ratio is increasing).

        Used to match a measured noise level to a diffusion time. Ratios outside the SDE's range clip
        to [t_min, T].
        """
        r = torch.as_tensor(ratio, dtype=torch.float64)
        lo = torch.full_like(r, self.t_min)
        hi = torch.full_like(r, self.T)
        for _ in range(64):
            mid = 0.5 * (lo + hi)
            above = self.noise_ratio(mid) > r
            hi = torch.where(above, mid, hi)
            lo = torch.where(above, lo, mid)
        return 0.5 * (lo + hi)


class VPSDE(SDE):
    """Variance-preserving SDE; its grid ``t_i = i / N`` is exactly the discrete DDPM chain."""

    def __init__(self, schedule: NoiseSchedule | None = None, t_min: float = 1e-3) -> None:
        super().__init__(t_min)
        self.schedule = schedule or LinearSchedule()

    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor]:
        log_ab = self.schedule.log_alpha_bar(t)
        return torch.exp(0.5 * log_ab), torch.sqrt(-torch.expm1(log_ab))

    def drift_coefficient(self, t: Tensor) -> Tensor:
        return -0.5 * self.schedule.beta(t)

    def diffusion(self, t: Tensor) -> Tensor:
        return torch.sqrt(self.schedule.beta(t))

    def config(self) -> dict[str, Any]:
        return {"name": "vp", "t_min": self.t_min, "schedule": self.schedule.config()}


class SubVPSDE(VPSDE):
    """Song et al.'s sub-VP SDE: same drift as VP, g^2 = beta (1 - alpha_bar^2), sigma = 1 - alpha_bar."""

    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor]:
        log_ab = self.schedule.log_alpha_bar(t)
        return torch.exp(0.5 * log_ab), -torch.expm1(log_ab)

    def diffusion(self, t: Tensor) -> Tensor:
        log_ab = self.schedule.log_alpha_bar(t)
        return torch.sqrt(self.schedule.beta(t) * -torch.expm1(2 * log_ab))

    def config(self) -> dict[str, Any]:
        return {"name": "subvp", "t_min": self.t_min, "schedule": self.schedule.config()}


class VESDE(SDE):
    """Variance-exploding SDE: f = 0, g^2 = d/dt [sigma_min^2 r^(2t)], r = sigma_max / sigma_min."""

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, t_min: float = 1e-5) -> None:
        super().__init__(t_min)
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)
        self._log_r = math.log(self.sigma_max / self.sigma_min)

    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor]:
        # Exact kernel of the forward SDE started at x_0 (no sigma_min offset at t = 0).
        sigma = self.sigma_min * torch.sqrt(torch.expm1(2 * self._log_r * t))
        return torch.ones_like(sigma), sigma

    def drift_coefficient(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def diffusion(self, t: Tensor) -> Tensor:
        return self.sigma_min * torch.exp(self._log_r * t) * math.sqrt(2 * self._log_r)

    def config(self) -> dict[str, Any]:
        return {"name": "ve", "t_min": self.t_min, "sigma_min": self.sigma_min, "sigma_max": self.sigma_max}


SDES: Registry[type[SDE]] = Registry("SDE")
SDES.register("vp", VPSDE)
SDES.register("subvp", SubVPSDE)
SDES.register("ve", VESDE)


def build_sde(config: dict[str, Any]) -> SDE:
    """Rebuild an SDE from :meth:`SDE.config` output (``name`` picks it from :data:`SDES`)."""
    cfg = dict(config)
    name = cfg.pop("name", "vp")
    if SDES.canonical(name) in ("vp", "subvp"):
        cfg["schedule"] = build_schedule(cfg.pop("schedule", {"name": "linear"}))
    return SDES.build(name, **cfg)  # type: ignore[no-any-return]
