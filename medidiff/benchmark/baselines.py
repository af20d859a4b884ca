"""Classical restoration baselines, each a plain function of (I, J, K) arrays.

They are what medidiff is compared against in ``medidiff benchmark``; each one is the field's reference
implementation called with documented, fixed settings (nothing here is tuned on the evaluation volumes):

* :func:`nlm`: scikit-image ``denoise_nl_means`` in 3D, given the true sigma.
* :func:`tv`: scikit-image ``denoise_tv_chambolle`` with a weight proportional to the true sigma.
* :func:`bm4d_denoise`: BM4D (the ``bm4d`` package of Mäkinen, Azzari and Foi) given the true sigma; that
  package is optional (not a dependency of medidiff), imported only when BM4D runs.
* :func:`biharmonic`: scikit-image ``inpaint_biharmonic``, one local problem per missing region.
* :func:`n4`: SimpleITK's N4 bias-field correction inside an Otsu head mask.
* :func:`cubic_slices`: cubic interpolation of thick slices onto the fine grid.

For Rician data, :func:`rician_corrected` applies to a baseline's output the same bias correction medidiff
applies to its own Rician estimate (:func:`medidiff.restoration.noise.rician_correct_mean`): all three
denoisers estimate the local *mean magnitude*, which sits above the true amplitude by the noise floor.
"""

from __future__ import annotations

import numpy as np

from medidiff.errors import ConfigError, InputError
from medidiff.n4 import N4_ITERATIONS, N4_SHRINK, n4_correct

# NLM settings (3D): 5^3 patches searched within +-4 voxels. scikit-image's defaults (7^3 patches, +-11)
# are tuned for 2D images and cost 23^3 = 12167 patch comparisons per voxel in 3D (about an hour on a 120^3
# volume on 2 cores); +-4 keeps 9^3 = 729 (about a minute) and 5^3 patches are the usual 3D choice (Coupé et
# al. 2008 use 3^3-5^3 patches and a +-5 search). h = 0.8 sigma with the noise variance subtracted from
# patch distances follows scikit-image's recipe for fast_mode with a known sigma; its suggested h = 0.8 sigma
# was lowered to 0.6 sigma, the best of 0.4-1.0 on the bundled training-distribution sample
# (data_samples/mni152_t1_2mm.nii.gz, Gaussian noise at 5% and 10%), never on the evaluation volumes.
NLM_PATCH_SIZE = 5
NLM_PATCH_DISTANCE = 4
NLM_H_FACTOR = 0.6

# TV: denoise_tv_chambolle minimises ||u - y||^2 / (2 weight) + TV(u) (weight in the image's units). The
# weight that balances them scales linearly with sigma; the factor was chosen once on the bundled
# training-distribution sample (data_samples/mni152_t1_2mm.nii.gz, Gaussian noise at 5% and 10%: PSNR peaks
# between 0.5 and 0.6 sigma at both levels, of 0.15-6 sigma tried) and is fixed for every benchmark.
TV_WEIGHT_FACTOR = 0.6

# Biharmonic inpainting: each connected missing region is solved on its bounding box grown by this many
# voxels (the biharmonic stencil reaches 2 voxels; a wider margin gives the solution known context).
BIHARMONIC_MARGIN = 4  # the same as medidiff.restoration.fill.BIHARMONIC_MARGIN


def _check_3d(volume: np.ndarray, name: str = "volume") -> np.ndarray:
    array = np.asarray(volume)
    if array.ndim != 3:
        raise InputError(f"{name} must be a 3D array, got shape {array.shape}")
    return array.astype(np.float64, copy=False)


def _check_sigma(sigma: float) -> float:
    if not np.isfinite(sigma) or sigma <= 0:
        raise ConfigError(f"the baselines need the true noise sigma (> 0), got {sigma}")
    return float(sigma)


def nlm(noisy: np.ndarray, sigma: float) -> np.ndarray:
    """Non-local means (scikit-image, 3D, fast mode) given the true noise sigma.

    Args:
        noisy: (I, J, K) noisy volume.
        sigma: the true noise standard deviation, in the volume's units.

    Returns:
        (I, J, K) float64 denoised volume.
    """
    from skimage.restoration import denoise_nl_means

    data, sigma = _check_3d(noisy, "noisy"), _check_sigma(sigma)
    out = denoise_nl_means(
        data,
        patch_size=NLM_PATCH_SIZE,
        patch_distance=NLM_PATCH_DISTANCE,
        h=NLM_H_FACTOR * sigma,
        sigma=sigma,
        fast_mode=True,
        preserve_range=True,
        channel_axis=None,
    )
    return np.asarray(out, dtype=np.float64)


def tv(noisy: np.ndarray, sigma: float, weight_factor: float = TV_WEIGHT_FACTOR) -> np.ndarray:
    """Total-variation denoising (Chambolle) with ``weight = weight_factor * sigma``.

    scikit-image's weight is in the image's intensity units, so scaling it with sigma keeps the rule valid
    for any intensity range.

    Args:
        noisy: (I, J, K) noisy volume.
        sigma: the true noise standard deviation, in the volume's units.
        weight_factor: weight / sigma (default :data:`TV_WEIGHT_FACTOR`).

    Returns:
        (I, J, K) float64 denoised volume.
    """
    from skimage.restoration import denoise_tv_chambolle

    data, sigma = _check_3d(noisy, "noisy"), _check_sigma(sigma)
    return np.asarray(denoise_tv_chambolle(data, weight=weight_factor * sigma), dtype=np.float64)


def bm4d_denoise(noisy: np.ndarray, sigma: float, profile: str = "np") -> np.ndarray:
    """BM4D (``bm4d.bm4d``, both stages: hard thresholding then Wiener) given the true noise sigma.

    Args:
        noisy: (I, J, K) noisy volume.
        sigma: the true noise standard deviation (``sigma_psd`` of white noise), in the volume's units.
        profile: the bm4d profile, "np" (normal) or "refilter".

    Returns:
        (I, J, K) float64 denoised volume.

    Raises:
        ConfigError: the bm4d package is not installed.
    """
    try:
        import bm4d
    except ImportError:
        raise ConfigError("the BM4D baseline needs the bm4d package: pip install bm4d") from None

    data, sigma = _check_3d(noisy, "noisy"), _check_sigma(sigma)
    return np.asarray(bm4d.bm4d(data, sigma, profile=profile), dtype=np.float64)


def rician_corrected(estimate: np.ndarray, sigma: float) -> np.ndarray:
    """The amplitude whose Rician mean is ``estimate`` (medidiff's own correction, applied to a baseline)."""
    from medidiff.restoration.noise import rician_correct_mean

    return np.asarray(rician_correct_mean(estimate, _check_sigma(sigma)), dtype=np.float64)


def biharmonic(degraded: np.ndarray, missing: np.ndarray, margin: int = BIHARMONIC_MARGIN) -> np.ndarray:
    """Biharmonic inpainting of the ``missing`` voxels, one local problem per connected region.

    The implementation lives in :func:`medidiff.restoration.fill.biharmonic_fill` (medidiff's inpainting
    starts from it); here every region is solved biharmonically, however large.

    Args:
        degraded: (I, J, K) volume (values at missing voxels are ignored).
        missing: (I, J, K) mask, nonzero = missing.
        margin: voxels of known context around each region's bounding box.

    Returns:
        (I, J, K) float64 volume: known voxels unchanged, missing ones filled.
    """
    from medidiff.restoration.fill import biharmonic_fill

    _check_3d(degraded, "degraded")
    return biharmonic_fill(degraded, missing, margin=margin, max_region=np.asarray(missing).size)


def n4(biased: np.ndarray, spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """N4 bias-field correction (SimpleITK) inside an Otsu foreground mask (:func:`medidiff.n4.n4_correct`).

    The field is fitted on a copy shrunk by :data:`N4_SHRINK` (the speed-up the SimpleITK examples use), then
    the full-resolution log-field is divided out of the original. N4 recovers intensities only up to a
    global scale, so compare its output after a scale fit (``psnr_scale_fit``).

    Args:
        biased: (I, J, K) volume with a smooth multiplicative field (non-negative intensities).
        spacing: voxel size in mm (I, J, K); N4's B-spline mesh is laid out in physical units.

    Returns:
        (I, J, K) float64 corrected volume.
    """
    return n4_correct(_check_3d(biased, "biased"), spacing, N4_SHRINK, N4_ITERATIONS)


def cubic_slices(thick: np.ndarray, axis: int, factor: int) -> np.ndarray:
    """Cubic interpolation of thick slices onto a grid ``factor`` times finer along ``axis``.

    Thick slice ``s`` is centred on fine index ``s * factor + (factor - 1) / 2`` (the slice-profile geometry
    of :class:`medidiff.restoration.operators.SliceProfile`), so fine index ``f`` sits at thick coordinate
    ``(f - (factor - 1) / 2) / factor``. Beyond the outermost slice centres the edge value is held
    (``mode="nearest"``), as a scanner's first and last slices give no information past themselves.

    Args:
        thick: (I, J, K) thick-slice volume.
        axis: the through-plane axis (0, 1 or 2).
        factor: slab thickness in fine slices (>= 1).

    Returns:
        float64 volume with ``thick.shape[axis] * factor`` slices along ``axis``.
    """
    from scipy.ndimage import map_coordinates

    data = _check_3d(thick, "thick")
    if axis not in (0, 1, 2) or int(factor) < 1:
        raise ConfigError(f"cubic interpolation needs axis 0..2 and factor >= 1, got {axis}, {factor}")
    factor = int(factor)
    fine = (np.arange(data.shape[axis] * factor) - (factor - 1) / 2) / factor
    grids = [np.arange(n, dtype=np.float64) for n in data.shape]
    grids[axis] = fine
    coords = np.meshgrid(*grids, indexing="ij")
    return np.asarray(map_coordinates(data, coords, order=3, mode="nearest"), dtype=np.float64)


def nearest_slices(thick: np.ndarray, axis: int, factor: int) -> np.ndarray:
    """Each thick slice repeated ``factor`` times along ``axis`` (how a viewer shows the thick input)."""
    return np.repeat(_check_3d(thick, "thick"), int(factor), axis=axis)
