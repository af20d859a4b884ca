"""Classical fills: known voxels kept, holes filled smoothly; huge regions fall back to smooth_fill."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.restoration import inpaint_biharmonic

from medidiff.errors import InputError
from medidiff.restoration.fill import biharmonic_fill, smooth_fill


def _ramp() -> tuple[np.ndarray, np.ndarray]:
    ramp = np.broadcast_to(np.linspace(-1, 1, 20)[:, None, None], (20, 8, 8)).copy()
    missing = np.zeros(ramp.shape, bool)
    missing[8:12] = True
    return ramp, missing


def test_smooth_fill_keeps_known_voxels_and_fills_monotonically_within_range() -> None:
    ramp, missing = _ramp()
    filled = smooth_fill(np.where(missing, 0.0, ramp), missing)
    assert np.array_equal(filled[~missing], ramp[~missing])
    hole = filled[8:12, 4, 4]
    assert (hole > -1).all() and (hole < 1).all() and (np.diff(hole) >= 0).all()


def test_biharmonic_fill_reproduces_a_ramp_and_matches_scikit_image() -> None:
    ramp, missing = _ramp()
    filled = biharmonic_fill(np.where(missing, 0.0, ramp), missing)
    assert np.abs(filled - ramp).max() < 1e-6  # a linear ramp is biharmonic: recovered exactly
    rng = np.random.default_rng(0)
    data = rng.standard_normal((12, 12, 12))
    hole = np.zeros(data.shape, bool)
    hole[4:7, 5:8, 3:6] = True
    np.testing.assert_allclose(
        biharmonic_fill(data, hole, margin=20), inpaint_biharmonic(data, hole), atol=1e-8
    )


def test_large_regions_fall_back_to_smooth_fill() -> None:
    ramp, missing = _ramp()
    data = np.where(missing, 0.0, ramp)
    out = biharmonic_fill(data, missing, max_region=10)
    np.testing.assert_array_equal(out, smooth_fill(data, missing))
    with pytest.raises(InputError, match="every voxel"):
        biharmonic_fill(data, np.ones(data.shape))
