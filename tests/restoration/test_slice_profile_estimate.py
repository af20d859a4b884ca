"""The spectral slice-profile estimate: exact self-similarity first (an isotropic random field), then a real
head, with and without noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

import medidiff
from medidiff.restoration.noise import estimate_sigma_gaussian
from medidiff.restoration.operators import SliceProfile
from medidiff.restoration.slice_profile_estimate import estimate_slice_sigma


def _thick(x: np.ndarray, axis: int, sigma: float, factor: int = 4) -> np.ndarray:
    op = SliceProfile(axis=axis, factor=factor, sigma=sigma).double()
    with torch.no_grad():
        return op(torch.from_numpy(x.astype(np.float64))[None, None])[0, 0].numpy()


@pytest.mark.parametrize("axis", [0, 2])
@pytest.mark.parametrize("true", [1.0, 2.0, 3.0])
def test_isotropic_field_gives_back_the_profile(axis: int, true: float) -> None:
    """A stationary isotropic field (white noise smoothed by an isotropic Gaussian of 1.5 voxels, offset so
    that every voxel is foreground) looks the same along every axis, so the estimate has no bias to hide
    behind. Measured: exact on the 0.1 grid of candidates; bound 0.2 (two steps)."""
    rng = np.random.default_rng(7)
    field = 10.0 + gaussian_filter(rng.standard_normal((96, 96, 96)), 1.5)
    est = estimate_slice_sigma(_thick(field, axis, true), axis, 4)
    assert est is not None and abs(est - true) <= 0.2, est


def test_real_head_within_half_a_voxel(sample_nifti: Path) -> None:
    """The bundled 2 mm MNI152 T1, every 4th slice after a profile of sigma 2 voxels, along each axis: the
    estimate is within 0.5 of the truth (measured 1.7-1.8: anatomy is not quite isotropic), where GDP's
    joint fit ends at 0.4-0.7. With 2% noise and the noise level passed, the same bound holds (measured
    1.7-1.8). Ignoring the noise biases it low: at 5% noise, over IXI012 and MNI152, sigma 1-3 along each
    axis, the mean absolute error is 0.39 with the noise level passed and 0.89 without."""
    x = medidiff.read_volume(sample_nifti).data.astype(np.float64)
    for axis in range(3):
        thick = _thick(x, axis, 2.0)
        est = estimate_slice_sigma(thick, axis, 4)
        assert est is not None and abs(est - 2.0) <= 0.5, (axis, est)
        noise = np.random.default_rng(axis).standard_normal(thick.shape)
        noisy = thick + 0.02 * np.percentile(thick, 99.5) * noise
        sigma = estimate_sigma_gaussian(noisy.astype(np.float32))
        est = estimate_slice_sigma(noisy, axis, 4, noise_sigma=sigma)
        assert est is not None and abs(est - 2.0) <= 0.5, (axis, "noisy", est)


def test_too_few_slices_or_no_foreground_gives_none() -> None:
    rng = np.random.default_rng(0)
    assert estimate_slice_sigma(10.0 + rng.standard_normal((64, 64, 5)), 2, 4) is None
    assert estimate_slice_sigma(np.zeros((64, 64, 16)), 2, 4) is None
