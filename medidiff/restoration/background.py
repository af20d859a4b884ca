"""Signal-free background (air) of a denoised volume: replaced by a wide local average of the noisy data.

Why: the prior's one-step denoiser is a posterior mean over a patch-sized context, and in air it keeps
about a sixth of the noise (on the EPI benchmark volume with 10% Gaussian noise, RMSE 11.4 in air against
5.6 for BM4D, which averages the many similar flat patches of the air together). Where the signal is flat
and below the noise level the posterior mean is the local mean of the data, which a normalised Gaussian
average over the background voxels gives directly: the residual noise falls with the number of voxels
averaged. The edge of the head is kept by restricting the average to background voxels and by blending
with a weight that ramps from 1 (well inside the background) to 0 at the threshold.

Background is where the estimate, smoothed with :data:`DETECT_SMOOTHING_VOXELS`, is less than
:data:`THRESHOLD` sigma above the air level (amplitudes that a single voxel cannot tell from noise). The air
level is 0 for magnitude images (MR); where the volume's floor lies far below 0 (CT in Hounsfield units, air
at -1000) it is that floor (the 0.5th percentile of the estimate), so that fat, water and soft tissue are
never taken for background. For Rician data the local average of the magnitudes is an estimate of the
Rician mean there, so it is bias-corrected with :func:`~medidiff.restoration.noise.rician_correct_mean`
like the rest of the volume.

Constants chosen on the development volumes (the bundled sample and IXI012, both in the training set), not
on the benchmark volumes: see docs/benchmarks.md.
"""

from __future__ import annotations

import numpy as np

from medidiff.restoration.fill import normalized_convolution

THRESHOLD = 1.5  # sigma; the weight is 1 below THRESHOLD / 2 and 0 at THRESHOLD
DETECT_SMOOTHING_VOXELS = 2.0
AVERAGING_VOXELS = 4.0


def air_level(estimate: np.ndarray, sigma: float, threshold: float = THRESHOLD) -> float:
    """The intensity of air: 0, or the volume's floor (0.5th percentile) where that is below -threshold sigma.

    Args:
        estimate: (I, J, K) denoised volume in the data's units.
        sigma: noise standard deviation (> 0), same units.
        threshold: in units of sigma.
    """
    floor = float(np.percentile(estimate, 0.5))
    return floor if floor < -threshold * sigma else 0.0


def background_weight(estimate: np.ndarray, sigma: float, threshold: float = THRESHOLD) -> np.ndarray:
    """How much each voxel is background: 1 well inside, ramping to 0 at ``threshold`` sigma above air.

    Args:
        estimate: (I, J, K) denoised amplitude in the data's units.
        sigma: noise standard deviation (> 0), same units.
        threshold: in units of sigma, on the estimate smoothed with :data:`DETECT_SMOOTHING_VOXELS`, above
            :func:`air_level`.

    Returns:
        (I, J, K) float64 weight in [0, 1].
    """
    from scipy.ndimage import gaussian_filter

    est = np.asarray(estimate, dtype=np.float64)
    local = gaussian_filter(est, DETECT_SMOOTHING_VOXELS) - air_level(est, sigma, threshold)
    level = threshold * sigma
    return np.clip((level - local) / (0.5 * level), 0.0, 1.0)


def flatten_background(
    estimate: np.ndarray,
    noisy: np.ndarray,
    sigma: float,
    noise: str = "gaussian",
    threshold: float = THRESHOLD,
    width: float = AVERAGING_VOXELS,
) -> tuple[np.ndarray, float]:
    """Replace the background of ``estimate`` by the local mean of ``noisy`` over the background.

    Args:
        estimate: (I, J, K) denoised amplitude (for Rician data: already bias-corrected).
        noisy: (I, J, K) the measured volume, same units.
        sigma: noise standard deviation (> 0).
        noise: ``gaussian`` or ``rician`` (the local mean of magnitudes is then bias-corrected).
        threshold: background level in units of sigma (see :func:`background_weight`); 0 turns it off.
        width: Gaussian width (voxels) of the average.

    Returns:
        ((I, J, K) float64 estimate, fraction of voxels with weight > 0.5).
    """
    from medidiff.restoration.noise import rician_correct_mean

    est = np.asarray(estimate, dtype=np.float64)
    if threshold <= 0:
        return est, 0.0
    weight = background_weight(est, sigma, threshold)
    inside = (weight > 0).astype(np.float64)
    if not inside.any():
        return est, 0.0
    mean, _ = normalized_convolution(np.asarray(noisy, dtype=np.float64), inside, width)
    if noise == "rician":
        mean = rician_correct_mean(mean, sigma)
    return weight * mean + (1.0 - weight) * est, float((weight > 0.5).mean())
