"""Read-side refusals in-process (the CLI's one-line behaviour is in tests/cli/test_bad_input.py)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medidiff.errors import ConfigError, InputError
from medidiff.io import read_volume
from medidiff.io.paths import detect_input_format


def test_input_formats_are_detected_without_reading(tmp_path: Path, sample_dicom_dir: Path) -> None:
    assert detect_input_format(sample_dicom_dir) == "dicom_dir"
    assert detect_input_format(next(sample_dicom_dir.iterdir())) == "dicom_file"
    for name, expected in [
        ("a.nii", "nifti"),
        ("a.NII.GZ", "nifti"),
        ("a.nhdr", "nrrd"),
        ("a.mhd", "metaimage"),
    ]:
        (tmp_path / name).write_bytes(b"")
        assert detect_input_format(tmp_path / name) == expected
    (tmp_path / "scan.bin").write_bytes(b"\0" * 200)
    with pytest.raises(InputError, match="not an image"):
        detect_input_format(tmp_path / "scan.bin")


def test_garbage_behind_an_image_suffix_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "garbage.nii.gz"
    path.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(InputError, match="cannot read") as error:
        read_volume(path)
    assert "\n" not in str(error.value)


def test_single_slice_volume_is_2d(tmp_path: Path) -> None:
    path = tmp_path / "slice.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((16, 1, 16), np.int16), np.eye(4)), str(path))
    with pytest.raises(InputError, match=r"2D image \(16 x 1 x 16\)"):
        read_volume(path)


def test_inf_alone_is_refused_and_finite_floats_pass(tmp_path: Path) -> None:
    data = np.ones((5, 5, 5), np.float64)
    data[4, 4, 4] = -np.inf
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "inf.nii.gz"))
    with pytest.raises(InputError, match="1 NaN/Inf voxels"):
        read_volume(tmp_path / "inf.nii.gz")
    data[4, 4, 4] = 1e30
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "big.nii.gz"))
    assert read_volume(tmp_path / "big.nii.gz").data.max() == 1e30


def test_series_option_on_a_file_is_a_config_error(sample_nifti: Path) -> None:
    with pytest.raises(ConfigError, match="--series"):
        read_volume(sample_nifti, series="1.2.3")
    with pytest.raises(InputError, match="one volume"):
        read_volume(sample_nifti, volume_index=1)
    assert read_volume(sample_nifti, volume_index=0).shape == (76, 94, 79)
