"""Probability-flow ODE solvers: Heun (2nd order) and DPM-Solver++(2M) for few-step sampling.

Both use the marginal's ``x_t = a_t x_0 + s_t eps`` only, so they hold for VP, sub-VP and VE alike.

* Heun works in Karras et al.'s variables ``y = x / a`` and ``r = s / a`` (the noise ratio), where the
  probability-flow ODE is ``dy/dr = eps_hat(x, t)`` for every such SDE (EDM, Algorithm 1).
* DPM-Solver++(2M) (Lu et al. 2022) integrates the data-prediction form exactly in the half log-SNR
  ``lambda = log(a / s)``: ``x_next = (s_n/s_t) x - a_n expm1(-h) D`` with ``h = lambda_n - lambda_t`` and
  ``D`` the x0-prediction, or its second-order multistep extrapolation from the previous step's.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from medidiff.diffusion.predictions import Prediction
from medidiff.samplers.base import Denoiser, Memory, Sampler


class HeunSampler(Sampler):
    """Heun's 2nd-order method on the probability-flow ODE (two evaluations per step, one at the end)."""

    name = "heun"
    default_spacing = "karras"
    evaluations_per_step = 2

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
        a_t, s_t = self.sde.scalar_coefficients(t)
        a_n, s_n = self.sde.scalar_coefficients(t_next)
        dr = s_n / a_n - s_t / a_t
        y = x / a_t
        x_euler = a_n * (y + dr * pred.eps)
        eps_next = self.evaluate(denoiser, x_euler, t_next).eps
        return a_n * (y + 0.5 * dr * (pred.eps + eps_next)), {}


class DPMSolverPP2MSampler(Sampler):
    """DPM-Solver++(2M): one evaluation per step; the first step is first order (= deterministic DDIM)."""

    name = "dpmpp2m"
    default_spacing = "logsnr"

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
        a_t, s_t = self.sde.scalar_coefficients(t)
        a_n, s_n = self.sde.scalar_coefficients(t_next)
        lam_t, lam_n = math.log(a_t / s_t), math.log(a_n / s_n)
        h = lam_n - lam_t
        data = pred.x0
        if "x0" in memory:
            r = (lam_t - memory["lambda"]) / h
            data = (1 + 0.5 / r) * pred.x0 - (0.5 / r) * memory["x0"]
        x_next = (s_n / s_t) * x - a_n * math.expm1(-h) * data
        return x_next, {"x0": pred.x0, "lambda": lam_t}
