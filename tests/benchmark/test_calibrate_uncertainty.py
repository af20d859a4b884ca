"""benchmarks/calibrate_uncertainty.py end to end on two small development cases with the tiny model: the
raw spread comes from an uncalibrated copy, inpainting is banded by the distance to known voxels, and
``--write`` stores a calibration that restore() then applies."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from benchmarks import calibrate_uncertainty as calibrate
from medidiff.uncertainty import MIN_BAND_VOXELS, Calibration, fit_scale

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dev_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two 32^3 crops of the bundled sample (two 'volumes'), each with one 16 mm hole and a missing slice."""
    sample = REPO / "data_samples" / "mni152_t1_2mm.nii.gz"
    volumes = [
        {"name": name, "path": str(sample), "label": name, "crop": [32, 32, 32]} for name in ("one", "two")
    ]
    volumes[1]["downsample"] = 2  # a different grid, so the two cases differ
    config = {
        "name": "calibration_test",
        "isolation": "inprocess",
        "threads": 1,
        "volumes": volumes,
        "degradations": [
            {
                "name": "inpaint",
                "task": "inpaint",
                "steps": [{"kind": "holes", "holes": 1, "hole_size_mm": 16}, {"kind": "slices", "count": 1}],
                "seed": 5,
                "methods": ["medidiff"],
                "medidiff": {"steps": 2, "samples": 3},
                "region": "missing",
            }
        ],
    }
    path = tmp_path_factory.mktemp("config") / "dev.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_collect_bands_inpainting_by_distance_and_fits_per_band(
    dev_config: Path, tiny_model_path: Path
) -> None:
    records = calibrate.collect(str(tiny_model_path), dev_config)
    assert [r["volume"] for r in records] == ["one", "two"]
    for r in records:
        assert r["key"] == "inpaint"
        assert r["error"].shape == r["raw"].shape == r["spread"].shape == r["feature"].shape
        assert r["feature"].min() == 1.0  # every missing voxel is at least one voxel from a known one
        assert np.all(r["raw"] >= 0) and np.any(r["spread"] != r["raw"])  # pooled, not the raw map
    calibration = calibrate.fit(records, "inpaint")
    assert calibration.feature == "distance_to_known" and calibration.pool == 2.0
    assert len(calibration.scales) == len(calibration.edges) + 1
    # Split-conformal in sample: a band with enough voxels (pooled over the cases) is covered at 95.4% or
    # more; the others take the scale of all voxels together.
    error, spread, feature = (np.concatenate([r[k] for r in records]) for k in ("error", "spread", "feature"))
    covered = np.abs(error) <= 2 * spread * calibration.scale_at({"distance_to_known": feature})
    band = np.digitize(feature, calibration.edges)
    whole = fit_scale(error, spread)
    for b, scale in enumerate(calibration.scales):
        if np.count_nonzero(band == b) >= MIN_BAND_VOXELS:
            assert np.mean(covered[band == b]) >= 0.954
        else:
            assert scale == pytest.approx(whole, abs=1e-3)
    assert any(np.count_nonzero(band == b) >= MIN_BAND_VOXELS for b in range(5))  # one band is fitted
    held = calibrate.fit(records, "inpaint", exclude="one")  # fitted on volume two only
    assert held != calibration


def test_write_stores_a_calibration_that_restore_applies(
    dev_config: Path, tiny_model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "model.safetensors"
    shutil.copy(tiny_model_path, model)
    shutil.copy(tiny_model_path.with_suffix(".json"), model.with_suffix(".json"))
    assert calibrate.main(["--model", str(model), "--config", str(dev_config), "--write"]) == 0
    printed = capsys.readouterr().out
    assert "| one inpaint | " in printed and "| two inpaint | " in printed
    stored = json.loads(model.with_suffix(".json").read_text())["uncertainty_scale"]["inpaint"]
    calibration = Calibration.from_config(stored)
    assert calibration.feature == "distance_to_known" and len(calibration.scales) == 5
    assert json.loads(printed.strip().splitlines()[-1]) == {"uncertainty_scale": {"inpaint": stored}}
