"""Inpainting: holes and missing slices given by a mask (``--task inpaint --mask MASK``, nonzero = missing).

The missing region starts from a biharmonic fill (:mod:`medidiff.restoration.fill`), diffused to a small
noise ratio, and short DDIM chains with DDNM's projection onto the known voxels fill it (:func:`inpaint`);
only windows near missing voxels are evaluated, and known voxels are copied back bit-exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from medidiff.diffusion.sde import SDE
from medidiff.errors import InputError
from medidiff.io.volume import Volume
from medidiff.normalize import Normalizer
from medidiff.restoration.conditioning import Projection
from medidiff.restoration.fill import biharmonic_fill
from medidiff.restoration.operators import Mask
from medidiff.samplers import Denoiser, get_sampler
from medidiff.tasks.base import (
    Callback,
    Chains,
    Problem,
    Task,
    TaskResult,
    mean_std,
    measurement,
    run_chains,
    start_time,
)
from medidiff.uncertainty import Strata, distance_to_known


def inpaint(
    y: Tensor,
    known: Tensor,
    denoiser: Denoiser,
    sde: SDE,
    steps: int = 50,
    start_ratio: float = 12.0,
    sampler: str = "ddim",
    samples: int = 1,
    prior_variance: float = 0.3,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> TaskResult:
    """Fill voxels where ``known`` is False, consistently with the known ones (which stay exactly y).

    ``y`` is (B, 1, I, J, K) in model units, ``known`` (1 or B, 1, I, J, K) bool. The missing region starts
    from a biharmonic fill, diffused to the time where the noise ratio sigma/alpha is ``start_ratio``
    (SDEdit), so a short chain (``steps`` evaluations) suffices. At every step the x0-estimate is projected
    onto the known voxels (DDNM's range-null-space rule with A = mask). With ``samples > 1`` the result is
    the mean of independent chains (closer to the posterior mean, which is what PSNR rewards) and ``std``
    their spread.
    """
    t_start = start_time(sde, start_ratio)
    known = known.bool()
    missing = ~known[0, 0].cpu().numpy()
    fill = torch.from_numpy(biharmonic_fill(y[0, 0].cpu().numpy(), missing)).to(y)[None, None]
    init = torch.where(known, y, fill)
    rule = Projection(Mask(known), torch.where(known, y, torch.zeros_like(y)), sde, 0.0, prior_variance)
    run = get_sampler(sampler, sde, steps)
    draws = run_chains(run, denoiser, sde, init, t_start, samples, rule, generator, callback)
    mean, std = mean_std([torch.where(known, y, x0) for x0 in draws])
    info = {"method": f"DDNM projection + {sampler}", "t_start": t_start, "steps": steps}
    return TaskResult(mean, std, info)


def missing_voxels(mask: Any, volume: Volume) -> np.ndarray:
    """The inpainting mask as a bool (I, J, K) array (True = missing), checked against the input."""
    from medidiff.inference.volumes import as_volume

    mask_vol, _ = as_volume(mask)
    if mask_vol.shape != volume.shape:
        raise InputError(f"the mask has shape {mask_vol.shape} but the input has shape {volume.shape}")
    if isinstance(mask, Volume) and not np.allclose(mask_vol.affine, volume.affine, atol=1e-3):
        raise InputError("the mask's geometry (affine) differs from the input's")
    missing = np.asarray(mask_vol.data) != 0
    if not missing.any():
        raise InputError("the mask marks no voxel as missing (nonzero = missing)")
    if missing.all():
        raise InputError("the mask marks every voxel as missing; nothing is known to inpaint from")
    return missing


class Inpaint(Task):
    """``--task inpaint``: see the module docstring."""

    name = "inpaint"

    def check(self, volume: Volume) -> None:
        self.missing = missing_voxels(self.options.mask, volume)

    def prepare(
        self, volume: Volume, norm: Normalizer, device: torch.device, patch: Sequence[int]
    ) -> Problem:
        from scipy.ndimage import binary_dilation

        y = measurement(volume, norm, device)
        # Only windows that reach a missing voxel change; a quarter window of margin keeps their context.
        active = torch.from_numpy(binary_dilation(self.missing, iterations=max(patch) // 4))[None, None]
        return Problem(y, y, volume.affine, active=active, info={"missing_voxels": int(self.missing.sum())})

    def run(self, problem: Problem, denoiser: Denoiser, sde: SDE, chains: Chains) -> TaskResult:
        ratio = self.spec.defaults.start_ratio
        assert ratio is not None  # the spec gives inpainting a start ratio
        return inpaint(
            problem.y,
            torch.from_numpy(~self.missing)[None, None].to(problem.y.device),
            denoiser,
            sde,
            steps=chains.steps,
            samples=chains.samples,
            generator=chains.generator,
            callback=chains.callback,
            start_ratio=ratio,
        )

    def calibration_strata(self) -> Strata:
        """The missing voxels, banded by their distance to the nearest known voxel (the error grows with it
        while the chains' spread does not: medidiff.uncertainty)."""
        return Strata(self.missing, {"distance_to_known": distance_to_known(self.missing)})

    def finish(
        self, problem: Problem, result: TaskResult, volume: Volume, norm: Normalizer
    ) -> tuple[np.ndarray, dict[str, Any]]:
        restored, _ = super().finish(problem, result, volume, norm)
        # Known voxels come back exactly as they were (float64, before any rounding to the input's dtype).
        return np.where(self.missing, restored, np.asarray(volume.data, dtype=np.float64)), {}
