"""Shared fixtures: sample data paths, the CLI as a real subprocess, synthetic DICOM series, a tiny model.

Keep fixtures here generic (usable by any test package); package-specific ones go in that package's
conftest.py. Plain helpers that tests call directly are in helpers.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import build_tiny_model

REPO = Path(__file__).resolve().parents[1]

# Compiled OpenVINO networks go to a cache of the test session (inherited by CLI subprocesses), never to the
# user's ~/.cache; one per session, so the tiny models are exported once and reused across tests.
if "MEDIDIFF_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["MEDIDIFF_CACHE_DIR"] = tempfile.mkdtemp(prefix="medidiff-test-cache-")
SAMPLES = REPO / "data_samples"


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    """The bundled sample folder (data_samples/)."""
    return SAMPLES


@pytest.fixture(scope="session")
def sample_nifti() -> Path:
    """The bundled 2 mm MNI152 T1 NIfTI, (76, 94, 79) int16."""
    return SAMPLES / "mni152_t1_2mm.nii.gz"


@pytest.fixture(scope="session")
def sample_dicom_dir() -> Path:
    """The bundled MR DICOM series of the same voxels as ``sample_nifti``."""
    return SAMPLES / "mni152_t1_2mm_dicom"


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:func:`helpers.build_tiny_model` (seed 0, channels (8, 16)) saved once as .safetensors + .json.

    Read-only for the tests: they load it, never write next to it.
    """
    from medidiff.nets.checkpoint import save_model

    return save_model(build_tiny_model(), tmp_path_factory.mktemp("model") / "tiny.safetensors")


@pytest.fixture(scope="session")
def pydicom_test_files() -> Path:
    """pydicom's bundled test files (contains dicomdirtests/98892001/CT5N, a 5-slice CT series)."""
    import pydicom

    return Path(pydicom.__file__).parent / "data" / "test_files"


def cli_env() -> dict[str, str]:
    """Environment for CLI subprocesses: this checkout importable, one thread, no debug tracebacks."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = "1"
    env.pop("MEDIDIFF_DEBUG", None)
    return env


def medidiff_command(*args: str | os.PathLike[str]) -> list[str]:
    """The argv of ``python -m medidiff ARGS`` with the interpreter running the tests."""
    return [sys.executable, "-m", "medidiff", *map(str, args)]


@pytest.fixture(scope="session")
def medidiff_env() -> dict[str, str]:
    """The environment for ``python -m medidiff`` subprocesses (see :func:`cli_env`)."""
    return cli_env()


@pytest.fixture
def run_cli(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``python -m medidiff ARGS`` in a real subprocess (cwd: tmp_path); returns the completed process."""

    def run(*args: str | os.PathLike[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            medidiff_command(*args),
            cwd=tmp_path,
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    """A (3, 3) rotation matrix from angles (radians) about x, then y, then z."""
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def write_synthetic_series(
    directory: Path,
    stored: np.ndarray,
    *,
    directions_lps: np.ndarray | None = None,
    spacing: Sequence[float] = (0.9, 1.1, 2.5),
    origin_lps: Sequence[float] = (-40.0, 25.0, 10.0),
    slope: float = 1.0,
    intercept: float = 0.0,
    modality: str = "MR",
    series_uid: str | None = None,
    description: str = "synthetic",
    file_names: Sequence[str] | None = None,
    instance_numbers: Sequence[int] | None = None,
    patient_name: str = "Test^Patient",
) -> list[Path]:
    """Write a single-frame DICOM series with pydicom alone (independent of medidiff's writer).

    Args:
        directory: created if missing.
        stored: stored pixel values (I, J, K), int16 or uint16; slice k is written with rows along J.
        directions_lps: (3, 3) columns = LPS unit vectors of I (along a row), J (down a column), K (slice
            normal); identity (axial) by default, a rotation for an oblique series.
        spacing: mm along I, J, K.
        origin_lps: ImagePositionPatient of slice 0.
        slope: RescaleSlope.
        intercept: RescaleIntercept.
        modality: Modality (MR or CT).
        series_uid: SeriesInstanceUID (new by default).
        description: SeriesDescription.
        file_names: name of each slice's file (default IM0001.dcm...), to decouple name from position.
        instance_numbers: InstanceNumber of each slice (default 1..K).
        patient_name: PatientName.

    Returns:
        The written paths, in slice order k = 0..K-1.
    """
    from pydicom import Dataset
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    directory.mkdir(parents=True, exist_ok=True)
    axes = np.eye(3) if directions_lps is None else np.asarray(directions_lps, dtype=np.float64)
    n_i, n_j, n_k = stored.shape
    series_uid = series_uid or generate_uid()
    study_uid, frame_uid = generate_uid(), generate_uid()
    names = list(file_names) if file_names is not None else [f"IM{k + 1:04d}.dcm" for k in range(n_k)]
    numbers = list(instance_numbers) if instance_numbers is not None else list(range(1, n_k + 1))
    paths = []
    for k in range(n_k):
        position = np.asarray(origin_lps, dtype=np.float64) + k * spacing[2] * axes[:, 2]
        ds = Dataset()
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4" if modality == "MR" else "1.2.840.10008.5.1.4.1.1.2"
        ds.SOPInstanceUID = generate_uid()
        ds.Modality = modality
        ds.PatientName = patient_name
        ds.PatientID = "TEST-001"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.SeriesDescription = description
        ds.SeriesNumber = 7
        ds.InstanceNumber = numbers[k]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in [*axes[:, 0], *axes[:, 1]]]
        ds.PixelSpacing = [f"{spacing[1]:g}", f"{spacing[0]:g}"]
        ds.SliceThickness = f"{spacing[2]:g}"
        ds.Rows, ds.Columns = n_j, n_i
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1 if stored.dtype == np.int16 else 0
        ds.RescaleSlope = f"{slope:g}"
        ds.RescaleIntercept = f"{intercept:g}"
        ds.PixelData = (
            np.ascontiguousarray(stored[:, :, k].T).astype(stored.dtype.newbyteorder("<")).tobytes()
        )
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = directory / names[k]
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


@pytest.fixture
def synthetic_series() -> Callable[..., list[Path]]:
    """The :func:`write_synthetic_series` helper, as a fixture."""
    return write_synthetic_series


@pytest.fixture
def oblique_axes() -> np.ndarray:
    """(3, 3) LPS unit vectors (columns) of an oblique slice grid (rotated by 20, -15 and 30 degrees)."""
    return rotation(np.deg2rad(20), np.deg2rad(-15), np.deg2rad(30))


def sitk_series_geometry(directory: Path) -> dict[str, Any]:
    """Read a DICOM series with SimpleITK's ImageSeriesReader (the reference implementation).

    Returns:
        ``data`` (I, J, K) float64 (rescaled) and ``affine`` (4, 4) voxel -> RAS built from SimpleITK's
        LPS origin/spacing/direction.
    """
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(directory)))
    image = reader.Execute()
    data = np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0)).astype(np.float64)
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    return {"data": data, "affine": np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps}


@pytest.fixture
def sitk_series_reference() -> Callable[[Path], dict[str, Any]]:
    """The :func:`sitk_series_geometry` helper, as a fixture."""
    return sitk_series_geometry
