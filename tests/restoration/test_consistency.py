"""The consistency check (discrepancy principle) on a real brain: quiet on noise, loud on anatomy."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from medidiff.restoration.consistency import (
    NOISE_RATIO_MAX,
    STRUCTURE_MAX,
    check_removed,
    white_lowpass_fraction,
)


@pytest.fixture(scope="module")
def brain(sample_nifti: Path) -> np.ndarray:
    return np.asarray(nib.load(sample_nifti).dataobj, dtype=np.float64)


def test_white_noise_keeps_the_closed_form_fraction_after_the_lowpass() -> None:
    """std of a Gaussian low-pass (s = 2 voxels) of 3D white noise: (2 sqrt(pi) s)^(-3/2) of the input's."""
    noise = np.random.default_rng(0).standard_normal((96, 96, 96))
    kept = ndimage.gaussian_filter(noise, 2.0)[10:-10, 10:-10, 10:-10].std()
    assert kept == pytest.approx(white_lowpass_fraction(2.0), rel=0.05)


def test_removing_exactly_the_noise_passes(brain: np.ndarray) -> None:
    sigma = 0.05 * np.percentile(brain, 99.5)
    noise = np.random.default_rng(1).normal(0.0, sigma, brain.shape)
    check = check_removed(noise, brain + noise)
    assert check.ok and check.problem is None
    assert check.noise_ratio == pytest.approx(1.0, abs=0.15)
    assert check.structure == pytest.approx(1.0, abs=0.3)


def test_removing_anatomy_or_too_much_is_flagged(brain: np.ndarray) -> None:
    """Two failures: noise plus a third of the anatomy's fine detail removed, and noise 2x the input's."""
    rng = np.random.default_rng(2)
    sigma = 0.05 * np.percentile(brain, 99.5)
    noise = rng.normal(0.0, sigma, brain.shape)
    detail = brain - ndimage.gaussian_filter(brain, 3.0)
    erased = check_removed(noise + 0.5 * detail, brain + noise)
    assert not erased.ok and erased.structure > STRUCTURE_MAX
    assert erased.problem is not None and "structure" in erased.problem and "\n" not in erased.problem
    doubled = check_removed(2.0 * noise, brain + noise)
    assert (
        not doubled.ok and doubled.noise_ratio > NOISE_RATIO_MAX and "more than the noise" in doubled.problem
    )


def test_too_little_tissue_is_no_verdict() -> None:
    check = check_removed(np.zeros((12, 12, 12)), np.zeros((12, 12, 12)))
    assert check.ok and check.voxels == 0
