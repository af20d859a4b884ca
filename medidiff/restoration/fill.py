"""Classical fills of missing voxels: the starting point of diffusion inpainting (and a baseline).

* :func:`biharmonic_fill`: scikit-image's ``inpaint_biharmonic``, solved per connected missing region on its
  bounding box grown by a margin (scikit-image builds one system over the box of *all* missing voxels; in 3D
  with distant holes that is most of the volume, minutes and gigabytes). Regions with more than
  ``max_region`` voxels fall back to :func:`smooth_fill`, whose cost is a few Gaussian filters.
* :func:`smooth_fill`: normalised convolution at growing scales.

Both take and return numpy arrays (I, J, K); known voxels are returned unchanged.
"""

from __future__ import annotations

import numpy as np

from medidiff.errors import InputError

BIHARMONIC_MARGIN = 4
MAX_BIHARMONIC_REGION = 200_000


def normalized_convolution(
    values: np.ndarray, weight: np.ndarray, sigma: float
) -> tuple[np.ndarray, np.ndarray]:
    """The Gaussian average of ``values`` over the voxels where ``weight`` > 0, and the averaged weight.

    Args:
        values, weight: (I, J, K) arrays of one float dtype (kept); ``weight`` is 1 where values count.
        sigma: Gaussian width in voxels.

    Returns:
        (average, den), both (I, J, K): ``G*(values weight) / G*weight`` (0 where ``den`` <= 1e-6)
        and ``G*weight``.
    """
    from scipy.ndimage import gaussian_filter

    num = gaussian_filter(values * weight, sigma)
    den = gaussian_filter(weight, sigma)
    return np.where(den > 1e-6, num / np.maximum(den, 1e-6), 0.0).astype(values.dtype), den


def smooth_fill(data: np.ndarray, missing: np.ndarray, rounds: int = 6) -> np.ndarray:
    """Fill ``missing`` voxels by normalised convolution at scales 1, 2, 4, ... voxels; float64 (I, J, K)."""
    values = np.asarray(data, dtype=np.float64)
    weight = (~np.asarray(missing, dtype=bool)).astype(np.float64)
    filled = values * weight
    have = weight.copy()
    for k in range(rounds):
        estimate, den = normalized_convolution(values, weight, 2.0**k)
        newly = (have == 0) & (den > 1e-3)
        filled[newly] = estimate[newly]
        have[newly] = 1.0
    return np.where(weight > 0, values, filled)


def biharmonic_fill(
    data: np.ndarray,
    missing: np.ndarray,
    margin: int = BIHARMONIC_MARGIN,
    max_region: int = MAX_BIHARMONIC_REGION,
) -> np.ndarray:
    """Biharmonic inpainting of ``missing`` (nonzero = missing), one local problem per connected region.

    Args:
        data: (I, J, K) volume (values at missing voxels are ignored).
        missing: (I, J, K) mask, nonzero = missing.
        margin: voxels of known context around each region's bounding box.
        max_region: regions larger than this use :func:`smooth_fill` instead (bounded time and memory).

    Returns:
        (I, J, K) float64 volume: known voxels unchanged, missing ones filled.
    """
    from scipy import ndimage
    from skimage.restoration import inpaint_biharmonic

    values = np.asarray(data, dtype=np.float64)
    hole = np.asarray(missing) != 0
    if values.ndim != 3:
        raise InputError(f"expected a 3D volume, got shape {values.shape}")
    if hole.shape != values.shape:
        raise InputError(f"the mask has shape {hole.shape} but the volume has shape {values.shape}")
    if hole.all():
        raise InputError("every voxel is missing; nothing to inpaint from")
    out = values.copy()
    labels, _ = ndimage.label(hole)
    large = np.zeros_like(hole)
    for region, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        local = labels[box] == region
        if int(local.sum()) > max_region:
            large[box] |= local
            continue
        grown = tuple(
            slice(max(s.start - margin, 0), min(s.stop + margin, n))
            for s, n in zip(box, values.shape, strict=True)
        )
        local_mask = labels[grown] == region
        out[grown] = np.where(local_mask, inpaint_biharmonic(out[grown], local_mask), out[grown])
    if large.any():
        out = np.where(large, smooth_fill(out, large), out)
    return out
