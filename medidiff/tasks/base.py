"""The task protocol, and what the tasks share: chains from a start, their mean and spread, foregrounds.

A task turns a volume into a restored one in three steps, which :func:`medidiff.inference.pipeline.restore`
calls in order without knowing which task it runs:

1. ``check(volume)``: cheap checks of the task's own inputs, before the model is loaded (a mask of the
   wrong shape, a volume without a thick axis);
2. ``prepare(volume, norm, device, patch) -> Problem``: the measurement in model units, the first guess on
   the output grid, the output geometry, and which windows the network must see;
3. ``run(problem, denoiser, sde, chains) -> TaskResult``: the sampling, in model units, with any
   whole-volume denoiser (the patch path, or an exact Gaussian denoiser in the tests);
4. ``finish(problem, result, volume, norm) -> (restored, info)``: back to the input's units (float64), with
   the task's own post-processing (Rician bias correction, copying known voxels).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from medidiff.diffusion.sde import SDE
from medidiff.io.volume import Volume
from medidiff.normalize import Normalizer
from medidiff.samplers import Conditioning, Denoiser, Sampler, StepContext
from medidiff.samplers.base import renoise
from medidiff.tasks.spec import TaskOptions, TaskSpec
from medidiff.uncertainty import Strata

Callback = Callable[[StepContext], None]


@dataclass
class TaskResult:
    """x0: (1, 1, I, J, K) estimate in model units; std: voxel-wise std over chains or None; info: what was
    done (JSON-able)."""

    x0: Tensor
    std: Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Problem:
    """A task's inputs in model units.

    Attributes:
        y: (1, 1, I, J, K) the measurement.
        init: (1, 1, I', J', K') the first guess on the output grid (``y`` when the grids agree).
        affine: (4, 4) geometry of the output grid.
        active: (1, 1, I', J', K') bool, the voxels whose windows the network must evaluate (others are
            filled with ``background``); None: every window.
        background: x0 of the windows that are not evaluated (model units).
        info: what ``prepare`` decided (noise level, fitted profile width...), merged into the result's.
    """

    y: Tensor
    init: Tensor
    affine: np.ndarray
    active: Tensor | None = None
    background: float = -1.0
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Chains:
    """How a task samples: ``samples`` chains of ``steps`` evaluations, drawn with ``generator``;
    ``callback`` sees every step (progress)."""

    steps: int
    samples: int
    generator: torch.Generator | None = None
    callback: Callback | None = None


class Task(ABC):
    """One restoration task (see the module docstring); a new instance per restoration.

    Subclasses set ``name`` (their :data:`medidiff.tasks.TASK_SPECS` entry) and implement ``prepare`` and
    ``run``; ``check`` and ``finish`` have defaults.
    """

    name: ClassVar[str] = ""

    def __init__(self, options: TaskOptions) -> None:
        self.options = options

    @property
    def spec(self) -> TaskSpec:
        from medidiff.tasks import get_spec

        return get_spec(self.name)

    def check(self, volume: Volume) -> None:  # noqa: B027 (a hook: most tasks have nothing to check)
        """Refuse the task's own inputs when they cannot work, before the model is loaded."""

    @abstractmethod
    def prepare(
        self, volume: Volume, norm: Normalizer, device: torch.device, patch: Sequence[int]
    ) -> Problem:
        """The problem in model units (``patch``: the network window, for the region it must see)."""

    @abstractmethod
    def run(self, problem: Problem, denoiser: Denoiser, sde: SDE, chains: Chains) -> TaskResult:
        """Sample; returns the estimate (and spread) on the output grid, in model units."""

    def finish(
        self, problem: Problem, result: TaskResult, volume: Volume, norm: Normalizer
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """The restored volume in the input's units (float64, output grid) and what was done."""
        return norm.invert(result.x0[0, 0].cpu().numpy(), np.float64), {}

    def removed(
        self, problem: Problem, restored: np.ndarray, volume: Volume, norm: Normalizer
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """What the restoration removed that should be noise, for the consistency check
        (:mod:`medidiff.restoration.consistency`): (removed, the input it was removed from), input units.

        None: the task has no part that should be noise (inpainting copies the known voxels back).
        """
        return None

    def calibration_strata(self) -> Strata | None:
        """Where the uncertainty map's calibration (:class:`medidiff.uncertainty.Calibration`) applies (known
        after ``check``): the restored region and the per-voxel features its scales may be banded by, on the
        output grid.

        None: every voxel, no features (a calibration of one scale).
        """
        return None


def measurement_residual(
    operator: torch.nn.Module, restored: np.ndarray, volume: Volume, norm: Normalizer, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """What a restoration through ``operator`` left unexplained: ``y - A(restored)`` on the measurement's
    grid, in input units, and ``y`` itself (float64). Should be the input's noise (the discrepancy principle).

    ``restored`` is the output (input units, output grid); A (model units) is the degradation.
    """
    x = torch.from_numpy(norm.forward(restored))[None, None].to(device)
    with torch.no_grad():
        explained = operator(x)[0, 0].cpu().numpy()
    data = np.asarray(volume.data, dtype=np.float64)
    return data - norm.invert(explained, np.float64), data


def measurement(volume: Volume, norm: Normalizer, device: torch.device) -> Tensor:
    """The volume in model units, (1, 1, I, J, K) float32 on ``device``."""
    return torch.from_numpy(norm.forward(volume.data))[None, None].to(device)


def foreground(y: Tensor, margin: int) -> Tensor:
    """Voxels clearly above the background after smoothing, dilated by ``margin`` voxels; (1, 1, I, J, K).

    ``y`` is (1, 1, I, J, K) in model units, where the bottom of the range is -1.
    """
    from scipy.ndimage import binary_dilation, gaussian_filter

    smooth = gaussian_filter(y[0, 0].cpu().numpy(), 1.5)
    mask = smooth > -0.9
    if margin > 0:
        mask = binary_dilation(mask, iterations=margin)
    return torch.from_numpy(mask)[None, None]


def start_time(sde: SDE, ratio: float) -> float:
    """The diffusion time at which sigma/alpha equals ``ratio`` (never below the SDE's t_min)."""
    return max(float(sde.t_from_noise_ratio(ratio)), sde.t_min)


def run_chains(
    run: Sampler,
    denoiser: Denoiser,
    sde: SDE,
    init: Tensor,
    t_start: float,
    samples: int,
    rule: Conditioning,
    generator: torch.Generator | None,
    callback: Callback | None,
) -> list[Tensor]:
    """``max(1, samples)`` conditioned chains, each from ``init`` (1, 1, I, J, K) freshly diffused to
    ``t_start``; returns their x0, each (1, 1, I, J, K)."""
    return [
        run.sample(
            denoiser,
            x_start=renoise(sde, init, 0.0, t_start, generator),
            t_start=t_start,
            generator=generator,
            conditioning=rule,
            callback=callback,
        )
        for _ in range(max(1, samples))
    ]


def mean_std(samples: list[Tensor]) -> tuple[Tensor, Tensor | None]:
    """The mean of the samples, and their unbiased std (None for a single sample)."""
    stack = torch.stack(samples)
    std = stack.std(dim=0, unbiased=True) if len(samples) > 1 else None
    return stack.mean(dim=0), std
