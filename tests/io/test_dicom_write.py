"""Writing derived DICOM series: geometry, identity, rescale precision, and the DICOM->DICOM->NIfTI chain."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from medidiff.io import read_volume, write_volume


def _headers(directory: Path) -> list[Any]:
    return [pydicom.dcmread(p) for p in sorted(directory.iterdir())]


def _positions(headers: list[Any]) -> np.ndarray:
    """ImagePositionPatient of every slice, sorted along the slice normal: (K, 3) LPS."""
    iop = np.asarray(headers[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    positions = np.asarray([[float(v) for v in h.ImagePositionPatient] for h in headers])
    return positions[np.argsort(positions @ normal)]


@pytest.fixture
def oblique_source(
    tmp_path: Path, synthetic_series: Callable[..., list[Path]], oblique_axes: np.ndarray
) -> Path:
    rng = np.random.default_rng(1)
    stored = rng.integers(0, 4000, size=(20, 16, 9)).astype(np.int16)
    synthetic_series(tmp_path / "source", stored, directions_lps=oblique_axes, description="T1 oblique")
    return tmp_path / "source"


def test_dicom_to_dicom_to_nifti_keeps_voxels_and_slice_positions(
    oblique_source: Path, tmp_path: Path, sitk_series_reference: Callable[[Path], dict[str, Any]]
) -> None:
    source = read_volume(oblique_source)
    derived_dir = write_volume(source, tmp_path / "derived/")
    derived = read_volume(derived_dir)
    nifti = read_volume(write_volume(derived, tmp_path / "derived.nii.gz"))
    assert np.array_equal(derived.data, source.data)
    assert np.array_equal(nifti.data, source.data)
    assert np.allclose(nifti.affine, source.affine, atol=1e-4)
    assert np.allclose(_positions(_headers(derived_dir)), _positions(_headers(oblique_source)), atol=1e-4)
    # an independent reader agrees on the written series
    reference = sitk_series_reference(derived_dir)
    assert np.array_equal(reference["data"], source.data.astype(np.float64))
    assert np.allclose(reference["affine"], source.affine, atol=1e-4)


def test_derived_series_identity(oblique_source: Path, tmp_path: Path) -> None:
    source = read_volume(oblique_source)
    derived_dir = write_volume(source, tmp_path / "derived")
    original, derived = _headers(oblique_source), _headers(derived_dir)
    assert len(derived) == len(original)
    first = derived[0]
    for keyword in ("PatientName", "PatientID", "StudyInstanceUID", "FrameOfReferenceUID", "Modality"):
        assert first.get(keyword) == original[0].get(keyword), keyword
    assert first.SeriesInstanceUID != original[0].SeriesInstanceUID
    assert len({h.SeriesInstanceUID for h in derived}) == 1
    sop_uids = {h.SOPInstanceUID for h in derived}
    assert len(sop_uids) == len(derived) and not sop_uids & {h.SOPInstanceUID for h in original}
    assert all(h.file_meta.MediaStorageSOPInstanceUID == h.SOPInstanceUID for h in derived)
    assert list(first.ImageType) == ["DERIVED", "SECONDARY"]
    assert first.SeriesDescription == "T1 oblique medidiff"
    assert first.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4"  # MR Image Storage, like the source
    assert np.allclose(
        np.asarray(first.ImageOrientationPatient, float),
        np.asarray(original[0].ImageOrientationPatient, float),
    )
    assert all(h.BitsAllocated == 16 for h in derived)


def test_float_results_fit_16_bits_through_rescale(oblique_source: Path, tmp_path: Path) -> None:
    source = read_volume(oblique_source)
    rng = np.random.default_rng(2)
    result = source.with_data(rng.normal(100.0, 800.0, size=source.shape).astype(np.float32))
    derived_dir = write_volume(result, tmp_path / "float/", dtype="float32")
    headers = _headers(derived_dir)
    slope = float(headers[0].RescaleSlope)
    assert slope != 1.0 and all(float(h.RescaleSlope) == slope for h in headers)
    back = read_volume(derived_dir)
    assert back.data.dtype == np.float32
    error = np.abs(back.data.astype(np.float64) - result.data)
    assert error.max() <= slope / 2 + 1e-3
    assert error.max() > 0  # it really went through quantisation
    assert slope == pytest.approx(np.ptp(result.data) / 65535, rel=1e-6)


def test_integer_input_keeps_integers_and_rounds_float_results(oblique_source: Path, tmp_path: Path) -> None:
    source = read_volume(oblique_source)
    result = source.with_data(source.data.astype(np.float32) + 0.4)
    back = read_volume(write_volume(result, tmp_path / "rounded/"))
    assert back.data.dtype == np.int16
    assert np.array_equal(back.data, source.data)
    assert float(_headers(tmp_path / "rounded")[0].RescaleSlope) == 1.0


def test_nifti_to_dicom_gets_a_synthetic_identity(sample_nifti: Path, tmp_path: Path) -> None:
    volume = read_volume(sample_nifti)
    directory = write_volume(volume, tmp_path / "from_nifti/")
    headers = _headers(directory)
    assert len(headers) == volume.shape[2]
    first = headers[0]
    assert str(first.PatientName) == "Anonymous" and first.PatientID.startswith("MEDIDIFF-")
    assert first.StudyInstanceUID and first.FrameOfReferenceUID
    assert len({h.StudyInstanceUID for h in headers}) == 1
    assert first.Modality == "OT" and first.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    back = read_volume(directory)
    assert np.array_equal(back.data, volume.data)
    assert np.allclose(back.affine, volume.affine, atol=1e-5)
