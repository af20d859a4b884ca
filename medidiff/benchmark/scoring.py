"""Scores of a method's output against the clean reference, with :mod:`medidiff.metrics`.

Every score of a case uses one ``data_range``: the clean reference's max - min (medidiff.metrics' default),
so that all methods and all columns share the same peak.

* ``psnr``, ``ssim``: over the whole volume (3D SSIM, Gaussian window sigma 1.5 voxels).
* ``psnr_region``: PSNR over the case's region: the reference's foreground (``foreground``), or the missing
  voxels (``missing``, inpainting: the known voxels are copied through and would only dilute the score).
* ``psnr_fit``: PSNR over the foreground after a global scale fit (:func:`psnr_scale_fit`), for bias-field
  correction, which recovers intensities only up to a factor.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medidiff.errors import InputError


def scale_fit(reference: np.ndarray, test: np.ndarray, mask: np.ndarray | None = None) -> float:
    """The scalar a minimising ||reference - a * test||^2 over the mask voxels: <r, t> / <t, t>.

    Args:
        reference: (I, J, K) clean volume.
        test: (I, J, K) volume to rescale.
        mask: (I, J, K) bool, or None for all voxels.
    """
    ref = np.asarray(reference, dtype=np.float64)
    tst = np.asarray(test, dtype=np.float64)
    if mask is not None:
        ref, tst = ref[mask], tst[mask]
    energy = float(np.dot(tst.ravel(), tst.ravel()))
    if energy == 0.0:
        raise InputError("cannot fit a scale to an all-zero volume")
    return float(np.dot(ref.ravel(), tst.ravel())) / energy


def psnr_scale_fit(
    reference: np.ndarray, test: np.ndarray, mask: np.ndarray | None = None, data_range: float | None = None
) -> float:
    """PSNR (dB) of ``a * test`` against ``reference`` over ``mask``, with a fitted by least squares there.

    Args:
        reference: (I, J, K) clean volume.
        test: (I, J, K) volume known up to a global scale.
        mask: (I, J, K) bool region of the fit and of the PSNR (None: all voxels).
        data_range: PSNR peak; default the reference's max - min over the whole volume.
    """
    from medidiff.metrics import psnr

    a = scale_fit(reference, test, mask)
    return psnr(reference, a * np.asarray(test, dtype=np.float64), mask=mask, data_range=data_range)


def score(
    reference: np.ndarray,
    test: np.ndarray,
    region: np.ndarray | None,
    foreground: np.ndarray,
    scale: bool = False,
    std: np.ndarray | None = None,
) -> dict[str, Any]:
    """All benchmark scores of ``test``.

    Args:
        reference: (I, J, K) clean volume.
        test: (I, J, K) output.
        region: (I, J, K) bool region of ``psnr_region`` (None: no such score).
        foreground: (I, J, K) bool foreground of the reference (the scale fit's region).
        scale: also compute ``psnr_fit``.
        std: (I, J, K) the method's uncertainty map, or None; its calibration is scored over the region
            (the foreground when there is none): :func:`medidiff.metrics.calibration`.

    Returns:
        ``{"psnr", "ssim", "psnr_region", "psnr_fit", "data_range"}`` (absent scores are None), and with
        ``std`` the calibration's ``coverage_1/2/3`` and ``std_error_corr``.
    """
    from medidiff.metrics import calibration, psnr, ssim

    ref = np.asarray(reference, dtype=np.float64)
    out = np.asarray(test, dtype=np.float64)
    peak = float(ref.max() - ref.min())
    calibrated: dict[str, Any] = {}
    if std is not None:
        where = foreground if region is None else region
        calibrated = calibration(ref, out, std, where)
    return {
        **calibrated,
        "psnr": psnr(ref, out, data_range=peak),
        "ssim": ssim(ref, out, data_range=peak),
        "psnr_region": None if region is None else psnr(ref, out, mask=region, data_range=peak),
        "psnr_fit": psnr_scale_fit(ref, out, foreground, peak) if scale else None,
        "data_range": peak,
    }
