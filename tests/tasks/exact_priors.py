"""Exact Gaussian priors and noisy draws for the tasks' closed-form tests (an exact denoiser is the "model").

Volumes are (N, 1, 4, 4, 4) for moments.
"""

from __future__ import annotations

import torch

from medidiff.diffusion import SDE
from medidiff.diffusion.gaussian import DiagonalGaussian, FullCovGaussian

EVENT = (1, 4, 4, 4)
DIM = 64
N = 4000


def diagonal_prior(sde: SDE) -> DiagonalGaussian:
    """Per-voxel means in [-0.8, 0.8] and variances in [0.05, 0.4]."""
    gen = torch.Generator().manual_seed(1)
    mean = torch.rand(EVENT, generator=gen, dtype=torch.float64) * 1.6 - 0.8
    var = torch.rand(EVENT, generator=gen, dtype=torch.float64) * 0.35 + 0.05
    return DiagonalGaussian(mean, var, sde)


def correlated_prior(sde: SDE) -> FullCovGaussian:
    """Exponential covariance 0.25 exp(-d / 2) on the 4^3 grid."""
    grid = torch.stack(torch.meshgrid(*[torch.arange(4.0)] * 3, indexing="ij"), -1).reshape(DIM, 3)
    cov = 0.25 * torch.exp(-torch.cdist(grid, grid).double() / 2.0)
    mean = torch.rand(EVENT, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 1.6 - 0.8
    return FullCovGaussian(mean, cov, EVENT, sde)


def noisy(prior: DiagonalGaussian | FullCovGaussian, noise: float, seed: int = 2) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = prior.sample(1, generator=gen)
    return x + noise * torch.randn(x.shape, generator=gen, dtype=torch.float64)


def final_variance(sde: SDE, var: torch.Tensor) -> torch.Tensor:
    """Variance of E[x0 | x_{t_min}] when x0 has variance ``var``: what a sampler's final denoise returns."""
    a, s = sde.scalar_coefficients(sde.t_min)
    return a**2 * var**2 / (a**2 * var + s**2)
