"""Reading DICOM series against SimpleITK's ImageSeriesReader (GDCM), and series/slice-order rules."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medidiff.errors import InputError
from medidiff.io import read_volume

SHAPE = (12, 10, 7)


def _ramp(shape: tuple[int, int, int] = SHAPE, dtype: Any = np.int16) -> np.ndarray:
    """Distinct values whose position reveals any axis swap or flip: 100*i + 10*j + k (minus an offset)."""
    i, j, k = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    return (100 * i + 10 * j + k - 300).astype(dtype)


def _assert_matches_sitk(volume: Any, reference: dict[str, Any], atol: float = 1e-4) -> None:
    assert volume.shape == reference["data"].shape
    assert np.allclose(volume.data.astype(np.float64), reference["data"], atol=atol)
    assert np.allclose(volume.affine, reference["affine"], atol=1e-4)


def test_pydicom_ct5n_matches_simpleitk(
    pydicom_test_files: Path, sitk_series_reference: Callable[[Path], dict[str, Any]]
) -> None:
    series = pydicom_test_files / "dicomdirtests" / "98892001" / "CT5N"
    volume = read_volume(series)
    reference = sitk_series_reference(series)
    _assert_matches_sitk(volume, reference)
    assert volume.shape == (16, 16, 5)
    assert volume.meta["modality"] == "CT"
    assert volume.data.dtype == np.int32  # integral rescale (intercept -1024) on int16: GDCM's choice too
    assert volume.spacing == pytest.approx((0.488281, 0.488281, 2.5))


def test_oblique_series_matches_simpleitk(
    tmp_path: Path,
    synthetic_series: Callable[..., list[Path]],
    oblique_axes: np.ndarray,
    sitk_series_reference: Callable[[Path], dict[str, Any]],
) -> None:
    stored = _ramp()
    synthetic_series(tmp_path / "oblique", stored, directions_lps=oblique_axes, slope=0.5, intercept=-7.25)
    volume = read_volume(tmp_path / "oblique")
    reference = sitk_series_reference(tmp_path / "oblique")
    _assert_matches_sitk(volume, reference)
    assert np.allclose(volume.data, stored * 0.5 - 7.25)
    assert volume.data.dtype == np.float32
    # the geometry itself, not only agreement: RAS columns are the LPS axes scaled by spacing, x and y flipped
    expected = np.diag([-1.0, -1.0, 1.0]) @ oblique_axes @ np.diag([0.9, 1.1, 2.5])
    assert np.allclose(volume.affine[:3, :3], expected, atol=1e-5)
    assert np.allclose(volume.affine[:3, 3], [40.0, -25.0, 10.0], atol=1e-5)


def test_slices_are_sorted_by_position_not_file_name_or_instance_number(
    tmp_path: Path, synthetic_series: Callable[..., list[Path]], oblique_axes: np.ndarray
) -> None:
    stored = _ramp()
    n = stored.shape[2]
    names = [f"{name}.dcm" for name in ("z", "a", "m", "b", "y", "c", "x")]  # lexical order != slice order
    numbers = [5, 1, 7, 2, 6, 3, 4]  # InstanceNumber order != slice order either
    synthetic_series(
        tmp_path / "shuffled", stored, directions_lps=oblique_axes, file_names=names, instance_numbers=numbers
    )
    assert sorted(names) != names and sorted(numbers) != numbers and len(names) == n
    volume = read_volume(tmp_path / "shuffled")
    assert np.array_equal(volume.data, stored)
    assert volume.data.dtype == np.int16  # slope 1, intercept 0: stored type kept


def test_directory_with_two_series_lists_them_and_series_picks_one(
    tmp_path: Path, synthetic_series: Callable[..., list[Path]]
) -> None:
    stored = _ramp()
    synthetic_series(tmp_path / "study" / "a", stored, series_uid="1.2.3.4.1", description="first")
    synthetic_series(tmp_path / "study" / "b", stored + 1, series_uid="1.2.3.4.2", description="second")
    with pytest.raises(InputError) as error:
        read_volume(tmp_path / "study")
    message = str(error.value)
    assert "2 DICOM series" in message and "--series" in message
    assert "1.2.3.4.1 'first' (7 files)" in message and "1.2.3.4.2 'second' (7 files)" in message
    second = read_volume(tmp_path / "study", series="1.2.3.4.2")
    assert np.array_equal(second.data, stored + 1)
    assert second.meta["series_description"] == "second" and second.meta["n_series"] == 2
    with pytest.raises(InputError, match="not in"):
        read_volume(tmp_path / "study", series="9.9.9")


def test_stray_files_are_ignored_and_missing_slices_refused(
    tmp_path: Path, synthetic_series: Callable[..., list[Path]]
) -> None:
    stored = _ramp()
    paths = synthetic_series(tmp_path / "series", stored)
    (tmp_path / "series" / "README.txt").write_text("not an image\n")
    assert np.array_equal(read_volume(tmp_path / "series").data, stored)
    paths[3].unlink()  # a gap in the middle of the stack
    with pytest.raises(InputError, match="spacing varies"):
        read_volume(tmp_path / "series")


def test_single_slice_is_2d(tmp_path: Path, synthetic_series: Callable[..., list[Path]]) -> None:
    paths = synthetic_series(tmp_path / "one", _ramp((8, 8, 1)))
    with pytest.raises(InputError, match="2D"):
        read_volume(paths[0])
    with pytest.raises(InputError, match="2D"):
        read_volume(tmp_path / "one")


def test_enhanced_multiframe_file_uses_per_frame_geometry(
    tmp_path: Path, synthetic_series: Callable[..., list[Path]], oblique_axes: np.ndarray
) -> None:
    import pydicom
    from pydicom import Dataset
    from pydicom.sequence import Sequence

    stored = _ramp()
    paths = synthetic_series(tmp_path / "single", stored, directions_lps=oblique_axes)
    expected = read_volume(tmp_path / "single")
    slices = [pydicom.dcmread(p) for p in paths]
    order = [3, 0, 6, 1, 5, 2, 4]  # frames stored out of spatial order
    ds = copy.deepcopy(slices[0])
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness"):
        delattr(ds, keyword)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4.1"  # Enhanced MR Image Storage
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.NumberOfFrames = len(order)
    shared = Dataset()
    orientation, measures, transform = Dataset(), Dataset(), Dataset()
    orientation.ImageOrientationPatient = slices[0].ImageOrientationPatient
    measures.PixelSpacing = slices[0].PixelSpacing
    measures.SliceThickness = slices[0].SliceThickness
    transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = "2", "10", "US"
    shared.PlaneOrientationSequence = Sequence([orientation])
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PixelValueTransformationSequence = Sequence([transform])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for index in order:
        position, item = Dataset(), Dataset()
        position.ImagePositionPatient = slices[index].ImagePositionPatient
        item.PlanePositionSequence = Sequence([position])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.PixelData = b"".join(slices[index].PixelData for index in order)
    path = tmp_path / "enhanced.dcm"
    ds.save_as(path, enforce_file_format=True)

    volume = read_volume(path)
    assert np.array_equal(volume.data, expected.data.astype(np.int32) * 2 + 10)
    assert volume.data.dtype.kind == "i"  # integral rescale stays integer
    assert np.allclose(volume.affine, expected.affine, atol=1e-5)


def test_sample_dicom_and_sample_nifti_are_the_same_scan(sample_dicom_dir: Path, sample_nifti: Path) -> None:
    from_dicom, from_nifti = read_volume(sample_dicom_dir), read_volume(sample_nifti)
    assert np.array_equal(from_dicom.data, from_nifti.data)
    assert from_dicom.data.dtype == from_nifti.data.dtype == np.int16
    assert np.allclose(from_dicom.affine, from_nifti.affine, atol=1e-5)
    assert from_dicom.meta["modality"] == "MR"
    assert from_dicom.orientation == from_nifti.orientation == "RAS"


def test_reading_does_not_change_the_input(tmp_path: Path, sample_dicom_dir: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(sample_dicom_dir, copy)
    before = {p.name: p.read_bytes() for p in copy.iterdir()}
    read_volume(copy)
    assert {p.name: p.read_bytes() for p in copy.iterdir()} == before
