"""Denoising: Gaussian or Rician noise of known or unknown level (``--task denoise``).

In model units the measurement is ``y = x0 + s n`` with s the noise level; the diffusion time t* with
``sigma(t*) / alpha(t*) = s`` makes ``alpha(t*) y`` a sample of x_{t*}, so one network evaluation at t*
gives Tweedie's posterior mean (:func:`denoise`). Around it: the noise level from ``--sigma`` or
estimated, the level the network is told (Rician: 0.9 sigma, :func:`network_noise_level`), the Rician
bias correction of the estimate, and the air around the head replaced by a wide local mean of the data
(:mod:`medidiff.restoration.background`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from medidiff.diffusion.sde import SDE
from medidiff.io.volume import Volume
from medidiff.normalize import Normalizer
from medidiff.samplers import Denoiser, get_sampler
from medidiff.tasks.base import (
    Callback,
    Chains,
    Problem,
    Task,
    TaskResult,
    foreground,
    mean_std,
    measurement,
    start_time,
)


def denoise(
    y: Tensor,
    denoiser: Denoiser,
    sde: SDE,
    noise_sigma: float,
    samples: int = 1,
    steps: int = 10,
    sampler: str = "ddpm",
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> TaskResult:
    """Gaussian denoising of ``y = x0 + noise_sigma * n`` (model units), y (B, 1, I, J, K).

    ``alpha(t*) y`` has exactly the law of x_{t*} when ``sigma(t*) / alpha(t*) = noise_sigma``, so the
    diffusion time matched to the noise level turns the measurement into a point of the reverse process.
    With ``samples == 1`` the result is Tweedie's posterior mean E[x0 | y] (one network evaluation). With
    ``samples > 1`` it is the mean of stochastic posterior samples, each the reverse process run from t*
    with ``steps`` steps, and the voxel-wise std of those samples.
    """
    t_star = start_time(sde, max(noise_sigma, 1e-8))
    alpha, _ = sde.scalar_coefficients(t_star)
    x_t = alpha * y
    info: dict[str, Any] = {"t_star": t_star, "noise_sigma_model": noise_sigma}
    if samples <= 1:
        pred = denoiser(x_t, torch.full((y.shape[0],), t_star, dtype=torch.float64, device=y.device))
        info.update(method="tweedie")
        return TaskResult(pred.x0, None, info)
    run = get_sampler(sampler, sde, steps)
    draws = [
        run.sample(denoiser, x_start=x_t, t_start=t_star, generator=generator, callback=callback)
        for _ in range(samples)
    ]
    mean, std = mean_std(draws)
    info.update(method=f"posterior samples ({sampler})", samples=samples)
    return TaskResult(mean, std, info)


class Denoise(Task):
    """``--task denoise``: see the module docstring."""

    name = "denoise"

    def check(self, volume: Volume) -> None:
        """Rician noise belongs to magnitude images: refuse it for a volume with clearly negative values."""
        if self.options.noise != "rician":
            return
        data = np.asarray(volume.data)
        low, high = float(data.min()), float(np.percentile(data, 99.5))
        if low < -0.01 * max(abs(high), 1e-12):
            from medidiff.errors import InputError

            raise InputError(
                f"--noise rician is for magnitude images, but this volume goes down to {low:.4g} "
                "(a CT or a phase image?); use --noise gaussian"
            )

    def prepare(
        self, volume: Volume, norm: Normalizer, device: torch.device, patch: Sequence[int]
    ) -> Problem:
        from medidiff.restoration.noise import network_noise_level, resolve_noise

        y = measurement(volume, norm, device)
        noise = self.options.noise
        estimate = resolve_noise(self.options.sigma, np.asarray(volume.data, dtype=np.float32), noise)
        sigma = estimate.sigma
        fg = foreground(y, margin=4).to(y.device)
        background = float(y[~fg].median()) if bool((~fg).any()) else -1.0
        # The level the network is told (model units): Rician magnitudes spread less than sigma.
        self.network_sigma = norm.sigma_to_model(network_noise_level(sigma, noise))
        info: dict[str, Any] = {"sigma": sigma, "noise": noise, "sigma_source": estimate.source}
        if estimate.note:
            info["notes"] = [estimate.note]
        return Problem(y, y, volume.affine, active=fg, background=background, info=info)

    def run(self, problem: Problem, denoiser: Denoiser, sde: SDE, chains: Chains) -> TaskResult:
        return denoise(
            problem.y,
            denoiser,
            sde,
            self.network_sigma,
            samples=chains.samples,
            steps=chains.steps,
            generator=chains.generator,
            callback=chains.callback,
        )

    def finish(
        self, problem: Problem, result: TaskResult, volume: Volume, norm: Normalizer
    ) -> tuple[np.ndarray, dict[str, Any]]:
        from medidiff.restoration import background as air
        from medidiff.restoration.noise import rician_correct_estimate

        restored, _ = super().finish(problem, result, volume, norm)
        sigma, noise = problem.info["sigma"], problem.info["noise"]
        if noise == "rician":
            restored = rician_correct_estimate(restored, sigma)
        # The module's constants are read here, not bound as defaults, so that THRESHOLD = 0 turns it off.
        restored, fraction = air.flatten_background(
            restored,
            np.asarray(volume.data, dtype=np.float64),
            sigma,
            noise,
            threshold=air.THRESHOLD,
            width=air.AVERAGING_VOXELS,
        )
        return restored, {"background_fraction": fraction}

    def removed(
        self, problem: Problem, restored: np.ndarray, volume: Volume, norm: Normalizer
    ) -> tuple[np.ndarray, np.ndarray]:
        """Denoising removed ``input - output``: all of it should be the input's noise."""
        data = np.asarray(volume.data, dtype=np.float64)
        return data - restored, data
