"""Is a restoration consistent with its input? The discrepancy principle, checked after the fact.

What a restoration removed from its input (``input - output``) should be the input's noise: white, of the
input's own noise level, with no anatomy in it. The noise level it is compared with is measured anew from
the input's bright tissue (:func:`~medidiff.restoration.noise.estimate_sigma_tissue`), independently of
the level the restoration assumed, so a wrong assumption shows. Two statistics over that bright tissue
(smoothed input above :data:`REGION_SNR` times that level, where Rician noise is Gaussian too):

* ``noise_ratio``: the robust std of what was removed (MAD x 1.4826) over the measured noise level. Above
  1: the restoration removed more than noise (tissue erased, or an assumed level that was too high);
  below: less (a level that was too low: the result keeps some noise, but is no worse than the input).
* ``structure``: how much of what was removed survives a Gaussian low-pass of :data:`LOWPASS_VOXELS`: its
  std after smoothing, over what white noise of the same std keeps (``(2 sqrt(pi) s)^(-3/2)`` of it in
  3D). White noise reads 1; anatomy in the removed part reads many times more.

The thresholds (:data:`NOISE_RATIO_MAX`, :data:`STRUCTURE_MAX`) were chosen on the development volumes
only (docs/benchmarks.md, "Consistency check").
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage

REGION_SNR = 3.0
LOWPASS_VOXELS = 2.0
NOISE_RATIO_MAX = 1.3
STRUCTURE_MAX = 2.0
_MIN_VOXELS = 500


@dataclass(frozen=True)
class Consistency:
    """The check's statistics and verdict (``problem``: one line when it fails, else None)."""

    noise_ratio: float
    structure: float
    voxels: int
    ok: bool
    problem: str | None = None

    def record(self) -> dict[str, Any]:
        """JSON-able form (NaN as None) for the result's info."""
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


def white_lowpass_fraction(voxels: float = LOWPASS_VOXELS) -> float:
    """The std fraction of 3D white noise that a Gaussian low-pass of ``voxels`` keeps."""
    return float((2.0 * math.sqrt(math.pi) * voxels) ** -1.5)


def check_removed(removed: np.ndarray, measured: np.ndarray) -> Consistency:
    """Check what a restoration removed against the input's own noise.

    Args:
        removed: (I, J, K) what was removed, in the input's units (``input - output``).
        measured: (I, J, K) the input the restoration started from.

    Returns:
        The statistics; ``ok`` is True (with NaN statistics) when there is too little bright tissue to tell.
    """
    from medidiff.errors import InputError
    from medidiff.restoration.noise import estimate_sigma_tissue

    removed = np.asarray(removed, dtype=np.float64)
    data = np.asarray(measured, dtype=np.float64)
    try:
        sigma = estimate_sigma_tissue(data)
    except InputError:
        return Consistency(math.nan, math.nan, 0, True)
    smooth = ndimage.gaussian_filter(data, 1.0)
    region = ndimage.binary_erosion(smooth > REGION_SNR * sigma, iterations=int(2 * LOWPASS_VOXELS))
    count = int(region.sum())
    if count < _MIN_VOXELS or sigma <= 0:
        return Consistency(math.nan, math.nan, count, True)
    inside = removed[region]
    spread = float(np.median(np.abs(inside - np.median(inside)))) * 1.4826
    ratio = spread / sigma
    low = ndimage.gaussian_filter(removed, LOWPASS_VOXELS)[region]
    structure = float(np.std(low)) / (max(spread, 1e-12 * sigma) * white_lowpass_fraction())
    problems = []
    if ratio > NOISE_RATIO_MAX:
        problems.append(f"it removed more than the noise ({ratio:.2f} x the noise level in tissue)")
    if structure > STRUCTURE_MAX:
        problems.append(f"what it removed holds structure ({structure:.1f} x white noise at low frequencies)")
    problem = None
    if problems:
        problem = "the result may be worse than the input: " + "; ".join(problems)
    return Consistency(ratio, structure, count, not problems, problem)
