"""Background flattening: the air becomes the local mean of the data, the signal is left alone."""

from __future__ import annotations

import numpy as np
import pytest

from medidiff.restoration.background import background_weight, flatten_background
from medidiff.restoration.noise import rician_correct_mean

SIGMA = 10.0


def _head(shape: tuple[int, int, int] = (40, 40, 40), level: float = 20 * SIGMA) -> np.ndarray:
    """A bright ball (20 sigma) in zero air."""
    grid = np.indices(shape).astype(np.float64)
    centre = (np.array(shape, dtype=np.float64) - 1) / 2
    radius = np.sqrt(((grid - centre[:, None, None, None]) ** 2).sum(axis=0))
    return np.where(radius < 12, level, 0.0)


def test_weight_is_one_in_air_and_zero_on_signal() -> None:
    clean = _head()
    weight = background_weight(clean, SIGMA, threshold=1.5)
    assert weight[0, 0, 0] == 1.0
    assert weight[20, 20, 20] == 0.0
    assert ((weight >= 0) & (weight <= 1)).all()


def test_gaussian_air_is_averaged_and_the_head_is_untouched() -> None:
    rng = np.random.default_rng(0)
    clean = _head()
    noisy = clean + SIGMA * rng.standard_normal(clean.shape)
    # An estimate that keeps a sixth of the noise everywhere, like the one-step denoiser does in air.
    estimate = clean + (SIGMA / 6) * rng.standard_normal(clean.shape)
    out, fraction = flatten_background(estimate, noisy, SIGMA, "gaussian", threshold=1.5, width=4.0)
    air = background_weight(clean, SIGMA, 1.5) == 1.0
    before = np.sqrt(np.mean((estimate - clean)[air] ** 2))
    after = np.sqrt(np.mean((out - clean)[air] ** 2))
    # A Gaussian average of width 4 voxels leaves sigma / sqrt((4 sqrt(4 pi))^3) ~ 0.04 sigma of the noise.
    assert after < 0.4 * before
    assert after < 0.1 * SIGMA
    inside = background_weight(estimate, SIGMA, 1.5) == 0.0
    np.testing.assert_array_equal(out[inside], estimate[inside])
    assert 0.5 < fraction < 0.9  # the ball fills about 13% of the box


def test_noise_free_step_is_reproduced_exactly() -> None:
    clean = _head()
    out, _ = flatten_background(clean, clean, SIGMA, "gaussian", threshold=1.5, width=4.0)
    np.testing.assert_allclose(out, clean, atol=1e-9)


def test_rician_air_is_brought_to_zero_amplitude() -> None:
    rng = np.random.default_rng(1)
    clean = _head()
    real, imaginary = SIGMA * rng.standard_normal((2, *clean.shape))
    noisy = np.hypot(clean + real, imaginary)
    # The exact inverse of the Rician mean applied voxel by voxel to a lightly smoothed magnitude: in air it
    # turns the floor's fluctuations into amplitudes of a few tenths of sigma.
    from scipy.ndimage import gaussian_filter

    estimate = rician_correct_mean(gaussian_filter(noisy, 1.0), SIGMA)
    air = background_weight(clean, SIGMA, 1.5) == 1.0
    out, _ = flatten_background(estimate, noisy, SIGMA, "rician", threshold=1.5, width=4.0)
    before = np.sqrt(np.mean(estimate[air] ** 2))
    after = np.sqrt(np.mean(out[air] ** 2))
    assert before > 0.3 * SIGMA
    # The inverse Rician mean is steep at the floor: a mean off by 1% of the floor maps to an amplitude of
    # 0.2 sigma, so even a 4-voxel average (about 2,700 voxels, 1% fluctuation) leaves ~0.15 sigma.
    assert after < 0.5 * before
    assert after < 0.2 * SIGMA


@pytest.mark.parametrize("noise", ["gaussian", "rician"])
def test_threshold_zero_turns_it_off(noise: str) -> None:
    rng = np.random.default_rng(2)
    estimate = rng.random((8, 9, 10))
    out, fraction = flatten_background(estimate, estimate + 1.0, 1.0, noise, threshold=0.0)
    np.testing.assert_array_equal(out, estimate)
    assert fraction == 0.0


def test_ct_in_hounsfield_units_flattens_only_the_air() -> None:
    """Air at -1000 HU, fat at -100, soft tissue at 40, noise sigma 20: only the air is background."""
    rng = np.random.default_rng(4)
    clean = np.full((40, 40, 40), -1000.0)
    clean[8:32, 8:32, 8:32] = -100.0  # fat
    clean[14:26, 14:26, 14:26] = 40.0  # soft tissue
    noisy = clean + 20.0 * rng.standard_normal(clean.shape)
    estimate = clean + 3.0 * rng.standard_normal(clean.shape)
    out, fraction = flatten_background(estimate, noisy, 20.0, "gaussian")
    np.testing.assert_array_equal(out[clean > -1000], estimate[clean > -1000])  # fat and tissue untouched
    air = np.ones(clean.shape, bool)
    air[4:36, 4:36, 4:36] = False  # the air beyond a 4-voxel margin around the body
    assert np.sqrt(np.mean((out - clean)[air] ** 2)) < 0.5 * np.sqrt(np.mean((estimate - clean)[air] ** 2))
    assert 1 - 32**3 / 40**3 < fraction < 1 - 24**3 / 40**3  # the air beyond the margin < it < all air
