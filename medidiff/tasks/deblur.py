"""Deblurring with a known Gaussian kernel (``--task deblur --fwhm MM``).

The blur is known, so nothing is fitted: the chains are guided by the noise-aware projection onto
``y = A x0 + n`` with A the Gaussian blur of full width at half maximum ``--fwhm`` mm (per axis in voxels:
FWHM / (2 sqrt(2 ln 2)) / spacing). With an exact Gaussian prior that projection makes every step the
exact conditional score, so the chains sample the exact posterior (``tests/tasks/test_deblur.py`` checks
its mean against the closed form). The chains start from ``y`` made consistent with the measurement,
diffused to the spec's start ratio.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from medidiff.diffusion.sde import SDE
from medidiff.io.volume import Volume
from medidiff.normalize import Normalizer
from medidiff.restoration.operators import GaussianBlur
from medidiff.samplers import Denoiser
from medidiff.tasks.base import (
    Chains,
    Problem,
    Task,
    TaskResult,
    foreground,
    measurement,
    measurement_residual,
)
from medidiff.tasks.unknown import DegradationModel, restore_unknown

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def blur_operator(fwhm_mm: float, spacing: Sequence[float]) -> GaussianBlur:
    """The Gaussian blur of FWHM ``fwhm_mm`` on a grid of voxel size ``spacing`` (mm, I, J, K)."""
    return GaussianBlur([fwhm_mm / FWHM_PER_SIGMA / float(s) for s in spacing])


def deblur(
    y: Tensor,
    operator: GaussianBlur,
    denoiser: Denoiser,
    sde: SDE,
    noise_sigma: float,
    steps: int = 50,
    start_ratio: float = 1.0,
    samples: int = 1,
    generator: torch.Generator | None = None,
    **settings: object,
) -> TaskResult:
    """Posterior samples of x0 given ``y = operator(x0) + noise_sigma n`` (model units, y (B, 1, I, J, K)).

    The known operator is a degradation model with nothing to fit; ``settings`` go to
    :func:`~medidiff.tasks.unknown.restore_unknown` (``prior_variance``, ``sampler``, ``callback``).
    """
    known = DegradationModel(operator, [], lambda: None, {"blur": operator})
    return restore_unknown(
        y,
        y,
        known,
        denoiser,
        sde,
        noise_sigma,
        steps=steps,
        start_ratio=start_ratio,
        samples=samples,
        generator=generator,
        **settings,  # type: ignore[arg-type]
    )


class Deblur(Task):
    """``--task deblur``: see the module docstring."""

    name = "deblur"

    def prepare(
        self, volume: Volume, norm: Normalizer, device: torch.device, patch: Sequence[int]
    ) -> Problem:
        from medidiff.restoration.noise import resolve_sigma

        y = measurement(volume, norm, device)
        sigma = resolve_sigma(self.options.sigma, np.asarray(volume.data, dtype=np.float32), "gaussian")
        self.noise_sigma = norm.sigma_to_model(sigma)
        fwhm = float(self.options.fwhm)  # type: ignore[arg-type]  # the spec requires it
        self.operator = blur_operator(fwhm, volume.spacing)
        info = {"sigma": sigma, "fwhm_mm": fwhm, "blur_sigma_voxels": self.operator.spec()["sigma"]}
        return Problem(y, y, volume.affine, active=foreground(y, margin=4), info=info)

    def run(self, problem: Problem, denoiser: Denoiser, sde: SDE, chains: Chains) -> TaskResult:
        ratio = self.spec.defaults.start_ratio
        assert ratio is not None  # the spec gives deblurring a start ratio
        return deblur(
            problem.y,
            self.operator,
            denoiser,
            sde,
            self.noise_sigma,
            steps=chains.steps,
            start_ratio=ratio,
            samples=chains.samples,
            generator=chains.generator,
            callback=chains.callback,
        )

    def removed(
        self, problem: Problem, restored: np.ndarray, volume: Volume, norm: Normalizer
    ) -> tuple[np.ndarray, np.ndarray]:
        """``y - A(restored)``: with the blur known, what it does not explain should be the input's noise."""
        return measurement_residual(self.operator, restored, volume, norm, problem.y.device)
