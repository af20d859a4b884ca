"""Image-quality metrics against a reference: PSNR, 3D SSIM and NRMSE, optionally inside a mask.

All three wrap scikit-image (``peak_signal_noise_ratio``, ``structural_similarity``, ``normalized_root_mse``);
a spacing-aware SSIM (Gaussian window given in mm, so anisotropic in voxels) repeats scikit-image's SSIM
map with per-axis sigmas, because scikit-image only takes one sigma and MONAI's per-axis SSIM runs in float32
(see :func:`_anisotropic_ssim_map`).

Conventions:

- ``data_range`` (PSNR's peak and SSIM's constants C1 = (0.01 L)^2, C2 = (0.03 L)^2) is explicit. Default: the
  reference's max - min over the whole volume, mask or not, so that a masked and an unmasked score share it.
- ``mask``: None (all voxels), a boolean array / Volume (nonzero = inside), or ``"auto"``: the reference's
  foreground (:func:`foreground_mask`).
- Masked SSIM is the mean of the local SSIM map over the mask voxels whose window lies inside the volume
  (the same border scikit-image drops for the unmasked score, so an all-true mask gives the unmasked value).
- Inputs are numpy arrays (I, J, K) or :class:`~medidiff.io.volume.Volume` objects; two Volumes must share
  their geometry.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from medidiff.errors import ConfigError, InputError
from medidiff.io.volume import Volume

ArrayOrVolume = np.ndarray | Volume
MaskSpec = np.ndarray | Volume | str | None

SSIM_SIGMA = 1.5  # Wang et al. 2004: Gaussian window, sigma 1.5 samples
_TRUNCATE = 3.5  # scikit-image's window: 2 * int(3.5 * sigma + 0.5) + 1 samples
_AFFINE_TOL_MM = 1e-3


def _array(image: ArrayOrVolume, name: str) -> np.ndarray:
    data = image.data if isinstance(image, Volume) else np.asarray(image)
    if data.ndim != 3:
        raise InputError(f"{name} must be a 3D volume, got shape {data.shape}")
    return data.astype(np.float64, copy=False)


def check_same_grid(
    a: ArrayOrVolume, b: ArrayOrVolume, names: tuple[str, str] = ("reference", "test")
) -> None:
    """Raise InputError unless ``a`` and ``b`` have the same shape (and, for Volumes, the same affine)."""
    shape_a, shape_b = (
        np.shape(a.data if isinstance(a, Volume) else a),
        np.shape(b.data if isinstance(b, Volume) else b),
    )
    if shape_a != shape_b:
        raise InputError(f"{names[0]} shape {tuple(shape_a)} and {names[1]} shape {tuple(shape_b)} differ")
    if isinstance(a, Volume) and isinstance(b, Volume):
        diff = float(np.abs(a.affine - b.affine).max())
        if diff > _AFFINE_TOL_MM:
            raise InputError(
                f"{names[0]} and {names[1]} have different geometry (affines differ by up to {diff:.4g} mm); "
                "resample one onto the other first"
            )


def foreground_mask(reference: ArrayOrVolume) -> np.ndarray:
    """Foreground of a scan: Otsu threshold, closing, largest connected component, holes filled.

    Args:
        reference: (I, J, K) array or Volume.

    Returns:
        (I, J, K) boolean mask.
    """
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    data = _array(reference, "reference")
    if float(data.max()) == float(data.min()):
        raise InputError("cannot find a foreground in a constant volume; give a mask")
    mask = data > threshold_otsu(data)
    mask = ndimage.binary_closing(mask, structure=ndimage.generate_binary_structure(3, 1), iterations=2)
    labels, count = ndimage.label(mask)
    if count > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        mask = labels == int(np.argmax(sizes))
    return np.asarray(ndimage.binary_fill_holes(mask), dtype=bool)


def resolve_mask(mask: MaskSpec, reference: ArrayOrVolume) -> np.ndarray | None:
    """A boolean (I, J, K) mask from ``mask`` (None, ``"auto"``, array or Volume; nonzero = inside)."""
    if mask is None:
        return None
    if isinstance(mask, str):
        if mask != "auto":
            raise ConfigError(f"mask must be an array, a Volume or 'auto', got {mask!r}")
        return foreground_mask(reference)
    check_same_grid(reference, mask, ("reference", "mask"))
    out = np.asarray(mask.data if isinstance(mask, Volume) else mask) != 0
    if not out.any():
        raise InputError("the mask is empty (no nonzero voxel)")
    return out


def _data_range(reference: np.ndarray, data_range: float | None) -> float:
    if data_range is None:
        data_range = float(reference.max() - reference.min())
        if data_range <= 0:
            raise InputError("the reference is constant, so its range is 0; give data_range explicitly")
    if not np.isfinite(data_range) or data_range <= 0:
        raise ConfigError(f"data_range must be a positive number, got {data_range}")
    return float(data_range)


def psnr(
    reference: ArrayOrVolume, test: ArrayOrVolume, mask: MaskSpec = None, data_range: float | None = None
) -> float:
    """Peak signal-to-noise ratio in dB: 10 log10(data_range^2 / MSE), MSE over the mask voxels.

    Args:
        reference: (I, J, K) ground truth (array or Volume).
        test: (I, J, K) image to score.
        mask: None, "auto", or an (I, J, K) mask (nonzero = inside).
        data_range: peak value L; default the reference's max - min.

    Returns:
        PSNR in dB (``inf`` when identical inside the mask).
    """
    from skimage.metrics import peak_signal_noise_ratio

    check_same_grid(reference, test)
    ref, tst = _array(reference, "reference"), _array(test, "test")
    inside = resolve_mask(mask, reference)
    peak = _data_range(ref, data_range)
    if inside is not None:
        ref, tst = ref[inside], tst[inside]
    if np.array_equal(ref, tst):
        return float("inf")
    return float(peak_signal_noise_ratio(ref, tst, data_range=peak))


def nrmse(
    reference: ArrayOrVolume, test: ArrayOrVolume, mask: MaskSpec = None, normalization: str = "euclidean"
) -> float:
    """Normalised root-mean-square error over the mask voxels (scikit-image's definition).

    Args:
        reference: (I, J, K) ground truth.
        test: (I, J, K) image to score.
        mask: None, "auto", or an (I, J, K) mask.
        normalization: "euclidean" (||ref - test|| / ||ref||), "min-max" (RMSE / (max - min of the
            reference)), or "mean" (RMSE / mean of the reference), all over the mask voxels.

    Returns:
        NRMSE (0 = identical).
    """
    from skimage.metrics import normalized_root_mse

    if normalization not in ("euclidean", "min-max", "mean"):
        raise ConfigError(f"normalization must be euclidean, min-max or mean, got {normalization!r}")
    check_same_grid(reference, test)
    ref, tst = _array(reference, "reference"), _array(test, "test")
    inside = resolve_mask(mask, reference)
    if inside is not None:
        ref, tst = ref[inside], tst[inside]
    return float(normalized_root_mse(ref, tst, normalization=normalization))


def _window(sigma: float) -> int:
    return 2 * int(_TRUNCATE * sigma + 0.5) + 1


def ssim_map(
    reference: ArrayOrVolume,
    test: ArrayOrVolume,
    data_range: float | None = None,
    sigma: float = SSIM_SIGMA,
    sigma_mm: float | None = None,
    spacing: Sequence[float] | None = None,
) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Local 3D SSIM map over the voxels whose Gaussian window lies inside the volume.

    Args:
        reference: (I, J, K) ground truth.
        test: (I, J, K) image to score.
        data_range: L in SSIM's constants; default the reference's max - min.
        sigma: window sigma in voxels (isotropic; scikit-image).
        sigma_mm: window sigma in mm instead (per-axis sigma = sigma_mm / spacing).
        spacing: voxel size (I, J, K) in mm, for ``sigma_mm`` with arrays; Volumes carry their own.

    Returns:
        The map (I', J', K') and the slices that place it in the (I, J, K) grid.
    """
    check_same_grid(reference, test)
    ref, tst = _array(reference, "reference"), _array(test, "test")
    peak = _data_range(ref, data_range)
    if sigma_mm is None:
        sigmas = [float(sigma)] * 3
    else:
        if spacing is None:
            spacing = reference.spacing if isinstance(reference, Volume) else (1.0, 1.0, 1.0)
        sigmas = [float(sigma_mm) / float(s) for s in spacing]
    if min(sigmas) <= 0:
        raise ConfigError(f"SSIM window sigma must be positive, got {sigmas}")
    windows = [_window(s) for s in sigmas]
    if any(w > n for w, n in zip(windows, ref.shape, strict=True)):
        raise InputError(f"volume {ref.shape} is smaller than the SSIM window {tuple(windows)}")
    crop = tuple(slice((w - 1) // 2, n - (w - 1) // 2) for w, n in zip(windows, ref.shape, strict=True))
    if sigma_mm is None:
        from skimage.metrics import structural_similarity

        _, full = structural_similarity(
            ref,
            tst,
            data_range=peak,
            gaussian_weights=True,
            sigma=sigmas[0],
            use_sample_covariance=False,
            full=True,
        )
        return np.asarray(full)[crop], crop
    return _anisotropic_ssim_map(ref, tst, sigmas, peak)[crop], crop


def _anisotropic_ssim_map(ref: np.ndarray, tst: np.ndarray, sigmas: list[float], peak: float) -> np.ndarray:
    """scikit-image's SSIM map (Gaussian weights, population covariance) with one sigma per axis.

    scikit-image only accepts a scalar sigma, and MONAI's ``compute_ssim_and_cs`` (which takes one per axis)
    computes in float32: on MR intensities (mean^2 / variance ~ 1e4) its E[x^2] - E[x]^2 cancellation costs
    ~1e-3 in SSIM. So this repeats scikit-image's five filtered moments in float64, with scipy's Gaussian
    filter taking the per-axis sigmas; the tests check it against scikit-image (isotropic) and MONAI.
    """
    from scipy import ndimage

    def local_mean(a: np.ndarray) -> np.ndarray:
        return np.asarray(ndimage.gaussian_filter(a, sigma=sigmas, truncate=_TRUNCATE, mode="reflect"))

    mu_x, mu_y = local_mean(ref), local_mean(tst)
    var_x = local_mean(ref * ref) - mu_x * mu_x
    var_y = local_mean(tst * tst) - mu_y * mu_y
    cov = local_mean(ref * tst) - mu_x * mu_y
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    return ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))


def ssim(
    reference: ArrayOrVolume,
    test: ArrayOrVolume,
    mask: MaskSpec = None,
    data_range: float | None = None,
    sigma: float = SSIM_SIGMA,
    sigma_mm: float | None = None,
    spacing: Sequence[float] | None = None,
) -> float:
    """Mean 3D SSIM (Gaussian window, Wang et al. 2004), over the mask if given.

    Args:
        reference: (I, J, K) ground truth.
        test: (I, J, K) image to score.
        mask: None, "auto", or an (I, J, K) mask: the mean runs over its voxels away from the border.
        data_range: L in SSIM's constants; default the reference's max - min.
        sigma: window sigma in voxels (default 1.5).
        sigma_mm: window sigma in mm instead, for anisotropic voxels.
        spacing: voxel size in mm for ``sigma_mm`` with plain arrays.

    Returns:
        SSIM in [-1, 1].
    """
    local, crop = ssim_map(reference, test, data_range, sigma, sigma_mm, spacing)
    inside = resolve_mask(mask, reference)
    if inside is None:
        return float(local.mean())
    inside = inside[crop]
    if not inside.any():
        raise InputError("the mask lies entirely within the SSIM window's border; nothing to score")
    return float(local[inside].mean())


def compute_metrics(
    reference: ArrayOrVolume,
    test: ArrayOrVolume,
    mask: MaskSpec = None,
    data_range: float | None = None,
    sigma_mm: float | None = None,
) -> dict[str, Any]:
    """PSNR, SSIM and NRMSE in one call (the foreground mask is computed once).

    Returns:
        ``{"psnr": dB, "ssim": ..., "nrmse": ..., "data_range": L, "voxels": n_scored, "mask": kind}``.
    """
    check_same_grid(reference, test)
    kind = "none" if mask is None else ("auto" if isinstance(mask, str) else "given")
    inside = resolve_mask(mask, reference)
    peak = _data_range(_array(reference, "reference"), data_range)
    return {
        "psnr": psnr(reference, test, inside, peak),
        "ssim": ssim(reference, test, inside, peak, sigma_mm=sigma_mm),
        "nrmse": nrmse(reference, test, inside),
        "data_range": peak,
        "voxels": int(inside.sum()) if inside is not None else int(np.prod(np.shape(_array(reference, "r")))),
        "mask": kind,
    }


def calibration(
    reference: ArrayOrVolume, estimate: ArrayOrVolume, std: ArrayOrVolume, mask: np.ndarray | None = None
) -> dict[str, float]:
    """How well an uncertainty map ``std`` describes the error ``estimate - reference`` over ``mask``.

    Returns:
        ``coverage_1``, ``coverage_2``, ``coverage_3``: the fraction of voxels whose error is within 1, 2
        and 3 std (a calibrated Gaussian spread gives 0.683, 0.954, 0.997); ``std_error_corr``: the Pearson
        correlation between std and |error| (how well the map ranks the voxels); ``mean_abs_error`` and
        ``mean_std``.
    """
    ref = _array(reference, "reference").astype(np.float64)
    est = _array(estimate, "estimate").astype(np.float64)
    spread = _array(std, "std").astype(np.float64)
    check_same_grid(ref, est)
    check_same_grid(ref, spread, ("reference", "std"))
    region = np.ones(ref.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    error = np.abs(est - ref)[region]
    s = spread[region]
    if error.size < 2:
        raise InputError("calibration needs at least two voxels in the region")
    corr = float(np.corrcoef(s, error)[0, 1]) if s.std() > 0 and error.std() > 0 else float("nan")
    out = {f"coverage_{k}": float(np.mean(error <= k * s)) for k in (1, 2, 3)}
    return {**out, "std_error_corr": corr, "mean_abs_error": float(error.mean()), "mean_std": float(s.mean())}
