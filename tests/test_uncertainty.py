"""The uncertainty maps' calibration: the conformal scale and its use by restore()."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import medidiff
from medidiff.io.volume import Volume
from medidiff.uncertainty import calibration_key, fit_scale, scale_for


@pytest.fixture(scope="module")
def noisy(sample_nifti: Path) -> Volume:
    """A 24^3 crop of the bundled MNI sample with Gaussian noise (sigma 60), int16."""
    brain = medidiff.read_volume(sample_nifti)
    crop = np.asarray(brain.data)[26:50, 35:59, 28:52].astype(np.float64)
    data = np.rint(crop + np.random.default_rng(0).normal(0.0, 60.0, crop.shape)).astype(np.int16)
    return Volume(data, brain.affine, {}, "noisy crop")


def test_fit_scale_covers_the_share_it_was_asked_for() -> None:
    """Errors N(0, (3 std)^2) with a map of std: the scale is 3 (the quantile of |N(0, 1)| at 95.4% is 2),
    and the scaled map covers 95.4% of fresh errors."""
    rng = np.random.default_rng(0)
    std = rng.uniform(0.5, 2.0, 200_000)
    error = 3.0 * std * rng.standard_normal(std.size)
    scale = fit_scale(error, std)
    assert scale == pytest.approx(3.0, rel=0.01)
    fresh = 3.0 * std * rng.standard_normal(std.size)
    assert np.mean(np.abs(fresh) <= 2 * scale * std) == pytest.approx(0.954, abs=0.003)


def test_fit_scale_is_the_split_conformal_quantile() -> None:
    """Ratios 1..99 (|error| / (2 std)): ceil(100 x 0.954) = 96th smallest -> 96; voxels with std 0 are
    ignored."""
    ratios = np.arange(1.0, 100.0)
    std = np.ones(101)
    std[-2:] = 0.0
    error = np.concatenate([2.0 * ratios, [5.0, 5.0]])
    assert fit_scale(error, std) == 96.0
    with pytest.raises(ValueError):
        fit_scale(np.ones(3), np.zeros(3))


def test_keys_name_the_task_and_its_degradations() -> None:
    assert calibration_key("inpaint") == "inpaint"
    assert calibration_key("restore", ["thick-slices"]) == "restore:thick-slices"
    assert calibration_key("restore", ["bias", "blur"]) == "restore:bias+blur"
    assert scale_for({"uncertainty_scale": {"inpaint": 2.5}}, "inpaint") == 2.5
    assert scale_for({}, "inpaint") is None


def test_restore_scales_the_spread_by_the_models_stored_scale(
    noisy: Volume, tiny_model_path: Path, tmp_path: Path
) -> None:
    """The same run with a model whose JSON stores a scale of 2.5 for denoise: a map 2.5 x the raw one, and
    info says which scale was used; without one the map is marked uncalibrated."""
    raw = medidiff.restore(noisy, samples=3, steps=2, model=tiny_model_path, progress=False, full_result=True)
    assert raw.info["uncertainty"] == {"key": "denoise", "scale": 1.0, "calibrated": False}
    calibrated = tmp_path / "calibrated.safetensors"
    shutil.copy(tiny_model_path, calibrated)
    config = json.loads(tiny_model_path.with_suffix(".json").read_text())
    config["uncertainty_scale"] = {"denoise": 2.5, "inpaint": 9.0}
    calibrated.with_suffix(".json").write_text(json.dumps(config))
    scaled = medidiff.restore(noisy, samples=3, steps=2, model=calibrated, progress=False, full_result=True)
    assert scaled.info["uncertainty"] == {"key": "denoise", "scale": 2.5, "calibrated": True}
    np.testing.assert_array_equal(scaled.volume.data, raw.volume.data)
    np.testing.assert_allclose(scaled.uncertainty.data, 2.5 * raw.uncertainty.data, rtol=1e-6)


def test_four_exact_posterior_chains_cover_only_83_percent_and_need_a_scale_of_1_84() -> None:
    """Why a scale is needed even for a perfect sampler: with K exact posterior samples (mean m, sample std
    s) and the truth drawn from the same posterior, (truth - m) / (s sqrt(1 + 1/K)) is Student-t with K - 1
    degrees of freedom. For K = 4, |error| <= 2 s holds with P(|t_3| <= 2 / sqrt(1.25)) = 0.829, and the
    95.4% scale is t_3's 97.7% quantile x sqrt(1.25) / 2 = 1.84."""
    from scipy import stats

    rng = np.random.default_rng(3)
    voxels, chains = 400_000, 4
    mean, spread = rng.normal(0.0, 1.0, voxels), rng.uniform(0.5, 2.0, voxels)
    samples = mean + spread * rng.standard_normal((chains, voxels))
    truth = mean + spread * rng.standard_normal(voxels)
    estimate, std = samples.mean(axis=0), samples.std(axis=0, ddof=1)
    factor = np.sqrt(1 + 1 / chains)
    expected = 2 * stats.t(chains - 1).cdf(2 / factor) - 1
    assert expected == pytest.approx(0.829, abs=0.001)
    assert np.mean(np.abs(truth - estimate) <= 2 * std) == pytest.approx(expected, abs=0.003)
    closed = stats.t(chains - 1).ppf(0.5 + 0.954 / 2) * factor / 2
    assert fit_scale(truth - estimate, std) == pytest.approx(closed, rel=0.02)
    assert closed == pytest.approx(1.84, abs=0.01)
