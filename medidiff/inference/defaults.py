"""Per-task defaults of ``restore()`` and the test-time views, without torch.

The CLI checks its options against these before it imports torch and MONAI (about 9 s of CPU per process on
a 2-core machine), so that a bad ``--views`` or ``--uncertainty`` is refused at once; the pipeline reads the
same values.
"""

from __future__ import annotations

from dataclasses import dataclass

from medidiff.errors import ConfigError

# Spatial axes (0-based) mirrored by each test-time view, in the order views are added: the identity, the
# mirror through the centre (all axes; the view least like the identity), single axes, then pairs
# (inference/patches.py applies them).
FLIPS: tuple[tuple[int, ...], ...] = ((), (0, 1, 2), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2))

TASKS = ("denoise", "inpaint", "restore")
NOISE_MODELS = ("gaussian", "rician")
DEGRADATIONS = ("bias", "blur", "slices")


@dataclass(frozen=True)
class TaskDefaults:
    """A task's default chain: ``samples`` chains of ``steps`` network evaluations each (at most ~50 in all,
    issue 5), started at the noise ratio sigma/alpha ``start_ratio`` (None: the task's own rule), each
    evaluation averaged over ``views`` mirrored test-time views (costing ``views`` evaluations)."""

    steps: int
    samples: int
    start_ratio: float | None = None
    views: int = 1


# Chosen by measurement on held-out IXI015 with degradations placed differently from the benchmark's
# (docs/benchmarks.md, "How the defaults were chosen"). Denoising: one Tweedie step at t* (1 evaluation);
# `steps` only matters with samples > 1. Denoising averages 2 views (the volume and its mirror image through
# the centre; inference/patches.py), measured on the development volumes only (bundled sample and IXI012,
# Gaussian and Rician noise at 5% and 10%; docs/benchmarks.md): +0.04-0.09 dB PSNR on IXI012's real scan,
# +0.12-0.14 on the template, SSIM +0.0002-0.0025, for a second network evaluation. The other tasks stay at
# one view: at their ~48 evaluations, 2 chains x 2 views did worse than 4 chains x 1 view (thick slices on
# IXI012: 27.67 vs 27.74 dB).
DEFAULTS = {
    "denoise": TaskDefaults(steps=25, samples=1, views=2),
    "inpaint": TaskDefaults(steps=12, samples=4, start_ratio=0.2),
    "restore": TaskDefaults(steps=12, samples=4, start_ratio=4.0),
}
# Thick slices start closer to their first guess (the cubic interpolation on the fine grid, made consistent
# with the slices: tasks.restore_unknown) than a bias field or blur: a bias field gains from a start where the
# prior dominates (bundled sample, PSNR after the scale fit: 21.52 / 21.84 / 23.45 dB from ratio 0.1 / 1 / 4;
# N4 22.25). Thick slices, measured on the development volumes only (x4 along array axis 2, profile sigma 2,
# estimated; 27,500-step model): IXI012, a real scan (sagittal), 28.03 / 28.04 / 28.03 / 28.02 dB from ratio
# 0.3 / 0.5 / 0.8 / 1.2 (cubic 27.07); the bundled sample (axial; the template, where the prior is strongest)
# 26.92 / 27.14 / 27.36 / 27.52 (cubic 24.46). 0.8: the largest start at which the real scan loses nothing.
# (Before the consistent first guess, a 64x80x64 crop of IXI015, x4, true profile: 27.22 / 27.51 / 27.46 dB
# from 0.1 / 0.3 / 1.)
SLICES_START_RATIO = 0.8


def start_ratio(task: str, kinds: list[str] | None = None) -> float:
    """The noise ratio sigma/alpha a chain of ``task`` starts at (``kinds``: restore's degradations)."""
    if task == "restore" and "slices" in (kinds or []):
        return SLICES_START_RATIO
    ratio = DEFAULTS[task].start_ratio
    if ratio is None:
        raise ValueError(f"task {task!r} runs no chain from a start ratio")  # a caller bug, not user input
    return ratio


def resolve_views(task: str, views: int | None) -> int:
    """``views``, or the task's default; a :class:`ConfigError` outside 1 to ``len(FLIPS)``."""
    count = DEFAULTS[task].views if views is None else int(views)
    if not 1 <= count <= len(FLIPS):
        raise ConfigError(f"--views must be between 1 and {len(FLIPS)}, got {count}")
    return count
