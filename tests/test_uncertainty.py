"""The uncertainty maps' calibration: conformal scales (per band), pooling, and their use by restore()."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import medidiff
from medidiff.io.volume import Volume
from medidiff.uncertainty import (
    Calibration,
    Strata,
    calibration_for,
    calibration_key,
    distance_to_known,
    fit_bands,
    fit_scale,
    pool_spread,
)


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
    assert calibration_for({"uncertainty_scale": {"inpaint": 2.5}}, "inpaint") == Calibration((2.5,))
    assert calibration_for({}, "inpaint") is None


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


BANDED = {"scales": [2.0, 5.0, 8.0], "pool": 2.0, "edges": [1.5, 3.5], "feature": "distance_to_known"}


def test_calibrations_round_trip_through_the_model_json() -> None:
    """A bare number is one scale without pooling (models calibrated before bands); a dict keeps its bands."""
    assert Calibration.from_config(9.591).to_config() == 9.591
    banded = Calibration.from_config(BANDED)
    assert banded == Calibration((2.0, 5.0, 8.0), (1.5, 3.5), "distance_to_known", 2.0)
    assert banded.to_config() == BANDED
    with pytest.raises(ValueError):
        Calibration((1.0, 2.0))  # two scales need one edge and a feature


def test_fit_bands_covers_each_band_on_fresh_errors() -> None:
    """Errors N(0, (k_b std)^2) with k = 2, 5, 9 in three bands of a feature: the fitted scales are k_b (the
    95.4% quantile of |N(0, 1)| is 2) and each band's fresh errors are covered at 95.4%; one scale for all
    would cover the outer band far less. A band with too few voxels takes the all-band scale."""
    rng = np.random.default_rng(1)
    feature = rng.uniform(0.0, 3.0, 300_000)
    band = np.digitize(feature, [1.0, 2.0])
    k = np.array([2.0, 5.0, 9.0])[band]
    std = rng.uniform(0.5, 2.0, feature.size)
    scales = fit_bands(k * std * rng.standard_normal(feature.size), std, feature, (1.0, 2.0))
    np.testing.assert_allclose(scales, [2.0, 5.0, 9.0], rtol=0.02)
    fresh = k * std * rng.standard_normal(feature.size)
    calibration = Calibration(scales, (1.0, 2.0), "f")
    covered = np.abs(fresh) <= 2 * std * calibration.scale_at({"f": feature})
    for b in range(3):
        assert np.mean(covered[band == b]) == pytest.approx(0.954, abs=0.005)
    single = fit_scale(k * std * rng.standard_normal(feature.size), std)
    assert np.mean((np.abs(fresh) <= 2 * single * std)[band == 2]) < 0.9
    sparse = np.where(np.arange(feature.size) < 500, 2.5, 0.5)  # 500 voxels in the outer band, none between
    error = std * rng.standard_normal(feature.size) * np.where(sparse > 2, 10.0, 1.0)
    few = fit_bands(error, std, sparse, (1.0, 2.0))
    inner = sparse < 1
    assert few[0] == fit_scale(error[inner], std[inner])
    assert few[1] == few[2] == fit_scale(error, std)


def test_pooling_averages_the_variance_within_the_region_only() -> None:
    """Inside the region the pooled map is the Gaussian average of the variance over region voxels only:
    constant there stays constant (the zero std of known voxels outside does not pull a border down), and
    a checkerboard of variances 1 and 9 pools to about 5; outside the region the std is unchanged."""
    region = np.zeros((20, 20, 20), bool)
    region[5:15, 5:15, 5:15] = True
    std = np.where(region, 3.0, 0.0)
    np.testing.assert_allclose(pool_spread(std, region, 2.0), std)
    checker = np.indices(region.shape).sum(axis=0) % 2 == 0
    std = np.where(region, np.where(checker, 1.0, 3.0), 0.0)
    pooled = pool_spread(std, region, 2.0)
    np.testing.assert_allclose(pooled[8:12, 8:12, 8:12], np.sqrt(5.0), rtol=0.01)
    np.testing.assert_array_equal(pooled[~region], 0.0)


def test_distance_to_known_in_closed_form() -> None:
    """A missing slice is 1 voxel from the known ones everywhere; a 5^3 cube's centre is 3 from outside."""
    slab = np.zeros((9, 9, 9), bool)
    slab[:, :, 4] = True
    np.testing.assert_array_equal(distance_to_known(slab)[slab], 1.0)
    cube = np.zeros((9, 9, 9), bool)
    cube[2:7, 2:7, 2:7] = True
    distance = distance_to_known(cube)
    assert distance[4, 4, 4] == 3.0 and distance[2, 4, 4] == 1.0 and distance[0, 0, 0] == 0.0


def test_restore_bands_the_inpainting_map_by_distance_to_known(
    noisy: Volume, tiny_model_path: Path, tmp_path: Path
) -> None:
    """The same inpainting with a model whose JSON stores a banded calibration: the map is the raw one
    pooled within the hole and scaled per distance band (2 on the hole's shell, 5 and 8 inside), and the
    info records the calibration; the restored voxels do not change."""
    mask = np.zeros(noisy.shape, np.uint8)
    mask[6:18, 6:18, 6:18] = 1
    options = {"task": "inpaint", "mask": mask, "samples": 3, "steps": 2, "progress": False}
    raw = medidiff.restore(noisy, model=tiny_model_path, full_result=True, **options)
    calibrated = tmp_path / "banded.safetensors"
    shutil.copy(tiny_model_path, calibrated)
    config = json.loads(tiny_model_path.with_suffix(".json").read_text())
    config["uncertainty_scale"] = {"inpaint": BANDED}
    calibrated.with_suffix(".json").write_text(json.dumps(config))
    banded = medidiff.restore(noisy, model=calibrated, full_result=True, **options)
    assert banded.info["uncertainty"] == {"key": "inpaint", "calibrated": True, **BANDED}
    np.testing.assert_array_equal(banded.volume.data, raw.volume.data)
    missing = mask.astype(bool)
    distance = distance_to_known(missing)
    pooled = pool_spread(np.asarray(raw.uncertainty.data, np.float64), missing, 2.0)
    expected = pooled * np.array([2.0, 5.0, 8.0])[np.digitize(distance, [1.5, 3.5])]
    np.testing.assert_allclose(banded.uncertainty.data, expected, rtol=1e-5, atol=1e-6)
    assert np.all(banded.uncertainty.data[~missing] == 0.0)
    shell, centre = missing & (distance == 1.0), missing & (distance >= 4.0)
    ratio = banded.uncertainty.data / np.maximum(pooled, 1e-12)
    np.testing.assert_allclose(ratio[shell], 2.0, rtol=1e-5)
    np.testing.assert_allclose(ratio[centre], 8.0, rtol=1e-5)
    with pytest.raises(ValueError, match="distance_to_known"):  # a task without the feature is refused
        Calibration.from_config(BANDED).apply(raw.uncertainty.data, Strata(missing, {}))
