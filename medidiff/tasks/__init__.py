"""The restoration tasks: one registry entry (a torch-free :class:`TaskSpec`) and one module each.

Adding a task is one file (a :class:`medidiff.tasks.base.Task` subclass: prepare, run, finish) and one
``TASK_SPECS.register`` call below; the CLI's ``--task`` choices, its option checks, ``restore()`` and the
Slicer module's command builder read the registry.

===========  ==========================================  =============================================
task         what                                        implementation
===========  ==========================================  =============================================
denoise      Gaussian or Rician noise, unknown sigma     :mod:`medidiff.tasks.denoise`
inpaint      holes and missing slices (``--mask``)       :mod:`medidiff.tasks.inpaint`
restore      unknown bias field, blur, thick slices      :mod:`medidiff.tasks.unknown`
deblur       a known Gaussian blur (``--fwhm``)          :mod:`medidiff.tasks.deblur`
===========  ==========================================  =============================================
"""

from __future__ import annotations

from medidiff.tasks.spec import (
    DEGRADATION_KINDS,
    DEGRADATIONS,
    FLIPS,
    NOISE_MODELS,
    TASK_SPECS,
    Requirement,
    TaskDefaults,
    TaskOptions,
    TaskSpec,
    parse_degradations,
)

# Defaults chosen by measurement on held-out IXI015 with degradations placed differently from the benchmark's
# (docs/benchmarks.md, "How the defaults were chosen"). Denoising: one Tweedie step at t* (1 evaluation);
# `steps` only matters with samples > 1. Denoising averages 2 views (the volume and its mirror image through
# the centre; inference/patches.py), measured on the development volumes only (bundled sample and IXI012,
# Gaussian and Rician noise at 5% and 10%; docs/benchmarks.md): +0.04-0.09 dB PSNR on IXI012's real scan,
# +0.12-0.14 on the template, SSIM +0.0002-0.0025, for a second network evaluation. The other tasks stay at
# one view: at their ~48 evaluations, 2 chains x 2 views did worse than 4 chains x 1 view (thick slices on
# IXI012: 27.67 vs 27.74 dB).
TASK_SPECS.register(
    "denoise",
    TaskSpec(
        name="denoise",
        summary="remove Gaussian or Rician noise of known or unknown level",
        defaults=TaskDefaults(steps=25, samples=1, views=2),
        implementation="medidiff.tasks.denoise:Denoise",
        accepts=("noise", "sigma"),
    ),
)
TASK_SPECS.register(
    "inpaint",
    TaskSpec(
        name="inpaint",
        summary="fill holes and missing slices given by a mask",
        defaults=TaskDefaults(steps=12, samples=4, start_ratio=0.2),
        implementation="medidiff.tasks.inpaint:Inpaint",
        requires=(Requirement("mask", "--task inpaint needs --mask MASK (nonzero = missing voxels)"),),
        accepts=("mask",),
    ),
)
TASK_SPECS.register(
    "restore",
    TaskSpec(
        name="restore",
        summary="remove unknown degradations (bias field, blur, thick slices), fitting their parameters",
        defaults=TaskDefaults(steps=12, samples=4, start_ratio=4.0),
        implementation="medidiff.tasks.unknown:RestoreUnknown",
        requires=(
            Requirement("degradation", f"--task restore needs --degradation {'|'.join(DEGRADATIONS)}[,...]"),
        ),
        accepts=("degradation", "target_spacing", "sigma"),
        writes_parameters=True,
    ),
)
TASK_SPECS.register(
    "deblur",
    TaskSpec(
        name="deblur",
        summary="undo a known Gaussian blur of full width at half maximum --fwhm (mm)",
        defaults=TaskDefaults(steps=12, samples=4, start_ratio=1.0),
        implementation="medidiff.tasks.deblur:Deblur",
        requires=(
            Requirement("fwhm", "--task deblur needs --fwhm MM (the blur's full width at half maximum)"),
        ),
        accepts=("fwhm", "sigma"),
    ),
)

TASKS: tuple[str, ...] = TASK_SPECS.names()


def get_spec(task: str) -> TaskSpec:
    """The spec of ``task`` (ConfigError for an unknown name)."""
    return TASK_SPECS.get(task)


__all__ = [
    "DEGRADATIONS",
    "DEGRADATION_KINDS",
    "FLIPS",
    "NOISE_MODELS",
    "TASKS",
    "TASK_SPECS",
    "Requirement",
    "TaskDefaults",
    "TaskOptions",
    "TaskSpec",
    "get_spec",
    "parse_degradations",
]
