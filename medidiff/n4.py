"""N4 bias-field correction (SimpleITK), shared by the training data and the benchmark baseline.

SimpleITK's ``N4BiasFieldCorrectionImageFilter`` is the field's reference implementation (Tustison et al.,
IEEE TMI 2010); this wrapper only does the array <-> image plumbing that both callers need: (I, J, K)
arrays with their voxel size in, an Otsu head mask, the fit on a shrunk copy, and the full-resolution
log-field divided out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# The field is fitted on a copy shrunk by this factor per axis (SimpleITK's documented speed-up); the fitted
# log-field is then evaluated on the full grid, so the correction itself is full resolution.
N4_SHRINK = 2
N4_ITERATIONS = (50, 50, 50, 50)


def n4_correct(
    volume: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    shrink: int = N4_SHRINK,
    iterations: Sequence[int] = N4_ITERATIONS,
) -> np.ndarray:
    """N4 bias-field correction inside an Otsu foreground mask.

    N4 recovers intensities only up to a global scale; the background (outside the mask) is divided by
    the same smooth field, extrapolated.

    Args:
        volume: (I, J, K) volume with a smooth multiplicative field (non-negative intensities).
        spacing: voxel size in mm (I, J, K); N4's B-spline mesh is laid out in physical units.
        shrink: the fit runs on a copy shrunk by this factor per axis.
        iterations: maximum iterations per fitting level (one level per entry).

    Returns:
        (I, J, K) float64 corrected volume.
    """
    import SimpleITK as sitk

    data = np.asarray(volume)
    # SimpleITK images are indexed (x, y, z) = (I, J, K) but arrays come out as (K, J, I): transpose in and
    # out so that spacing stays attached to the right axis.
    image = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)).astype(np.float32))
    image.SetSpacing([float(s) for s in spacing])
    mask = sitk.OtsuThreshold(image, 0, 1, 200)
    small = sitk.Shrink(image, [int(shrink)] * 3)
    small_mask = sitk.Shrink(mask, [int(shrink)] * 3)
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations([int(i) for i in iterations])
    corrector.Execute(small, small_mask)
    log_field = corrector.GetLogBiasFieldAsImage(image)
    corrected = image / sitk.Exp(log_field)
    return np.asarray(sitk.GetArrayFromImage(corrected), dtype=np.float64).transpose(2, 1, 0)
