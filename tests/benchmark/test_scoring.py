"""psnr_scale_fit against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medidiff.benchmark.scoring import psnr_scale_fit, scale_fit, score
from medidiff.errors import InputError


def test_scale_fit_hand_values() -> None:
    reference = np.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 2, 2)
    test = np.array([1.0, 1.0, 2.0, 2.0]).reshape(1, 2, 2)
    # a = <r, t> / <t, t> = (1 + 2 + 6 + 8) / (1 + 1 + 4 + 4) = 17 / 10
    assert scale_fit(reference, test) == pytest.approx(1.7)
    # residuals r - 1.7 t = (-0.7, 0.3, -0.4, 0.6): MSE = (0.49 + 0.09 + 0.16 + 0.36) / 4 = 0.275
    # data range of the reference = 3 -> PSNR = 10 log10(9 / 0.275)
    reference3 = np.tile(reference, (8, 4, 4))  # large enough for the metrics' 3D checks, same statistics
    test3 = np.tile(test, (8, 4, 4))
    assert psnr_scale_fit(reference3, test3) == pytest.approx(10 * math.log10(9 / 0.275), abs=1e-9)


def test_scale_fit_inside_mask_only() -> None:
    rng = np.random.default_rng(0)
    reference = rng.uniform(1, 2, size=(8, 8, 8))
    test = reference / 3.0
    mask = np.zeros(reference.shape, dtype=bool)
    mask[2:6, 2:6, 2:6] = True
    test[~mask] = 100.0  # outside the mask, the test is garbage: neither the fit nor the PSNR may see it
    assert scale_fit(reference, test, mask) == pytest.approx(3.0)
    assert psnr_scale_fit(reference, test, mask) > 250.0  # exact up to rounding


def test_scale_fit_of_zeros_is_refused() -> None:
    with pytest.raises(InputError, match="all-zero"):
        scale_fit(np.ones((4, 4, 4)), np.zeros((4, 4, 4)))


def test_score_columns() -> None:
    rng = np.random.default_rng(1)
    reference = rng.uniform(0, 10, size=(16, 16, 16))
    test = reference + rng.normal(0, 0.5, size=reference.shape)
    region = np.zeros(reference.shape, dtype=bool)
    region[4:12, 4:12, 4:12] = True
    scores = score(reference, test, region, region, scale=True)
    mse = np.mean((reference - test) ** 2)
    peak = reference.max() - reference.min()
    assert scores["psnr"] == pytest.approx(10 * math.log10(peak**2 / mse))
    assert scores["psnr_region"] == pytest.approx(
        10 * math.log10(peak**2 / np.mean((reference[region] - test[region]) ** 2))
    )
    assert scores["psnr_fit"] >= scores["psnr_region"]  # the fitted scale can only lower the error
    assert 0.0 < scores["ssim"] < 1.0
    assert score(reference, test, None, region)["psnr_region"] is None
