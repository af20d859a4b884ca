"""Output safety: never over the input, no silent overwrite, atomic writes, clear refusals."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from medidiff.errors import ConfigError, OutputError
from medidiff.io import read_volume, write_volume


def _listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_output_equal_to_input_is_refused(sample_nifti: Path, tmp_path: Path) -> None:
    source = tmp_path / "scan.nii.gz"
    shutil.copy(sample_nifti, source)
    volume = read_volume(source)
    before = source.read_bytes()
    with pytest.raises(OutputError, match="is the input"):
        write_volume(volume, source, overwrite=True)
    with pytest.raises(OutputError, match="is the input"):  # same file through another spelling
        write_volume(volume, tmp_path / "sub" / ".." / "scan.nii.gz", overwrite=True)
    assert source.read_bytes() == before
    assert _listing(tmp_path) == ["scan.nii.gz"]


def test_output_inside_the_input_dicom_directory_is_refused(sample_dicom_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "series"
    shutil.copytree(sample_dicom_dir, source)
    volume = read_volume(source)
    before = _listing(source)
    for target in (source, source / "restored.nii.gz", f"{source}/"):
        with pytest.raises(OutputError, match="input"):
            write_volume(volume, target, overwrite=True)
    with pytest.raises(OutputError, match="contains the input"):
        write_volume(volume, f"{tmp_path}/", overwrite=True)
    assert _listing(source) == before


def test_existing_output_needs_overwrite(sample_nifti: Path, tmp_path: Path) -> None:
    volume = read_volume(sample_nifti)
    target = tmp_path / "out.nii.gz"
    target.write_bytes(b"precious")
    with pytest.raises(OutputError, match="--overwrite"):
        write_volume(volume, target)
    assert target.read_bytes() == b"precious"
    write_volume(volume, target, overwrite=True)
    assert np.array_equal(read_volume(target).data, volume.data)


def test_existing_dicom_directory_is_replaced_whole_only_if_all_dicom(
    sample_nifti: Path, tmp_path: Path
) -> None:
    volume = read_volume(sample_nifti)
    small = volume.with_data(volume.data)
    target = tmp_path / "series"
    write_volume(small, target)
    with pytest.raises(OutputError, match="--overwrite"):
        write_volume(small, target)
    (target / "IM99999.dcm").write_bytes((target / "IM00001.dcm").read_bytes())  # a stale extra slice
    write_volume(small, target, overwrite=True)
    assert len(_listing(target)) == volume.shape[2]  # replaced whole: the stale slice is gone
    (target / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="not DICOM"):
        write_volume(small, target, overwrite=True)
    assert (target / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("name", ["out.nii.gz", "out.nrrd", "out.mha", "out_dicom/"])
def test_a_failing_write_leaves_nothing(
    name: str, sample_nifti: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer dies part-way (disk full) after bytes or slices exist: no output, no temporary left."""
    import nibabel as nib
    import pydicom
    import SimpleITK as sitk

    volume = read_volume(sample_nifti)
    outdir = tmp_path / "outputs"
    outdir.mkdir()
    real_save_as = pydicom.Dataset.save_as
    saved = {"slices": 0}

    def save_as_then_fail(self: pydicom.Dataset, filename: object, **kwargs: object) -> None:
        if saved["slices"] == 3:
            raise OSError(28, "No space left on device")
        saved["slices"] += 1
        real_save_as(self, filename, **kwargs)  # type: ignore[arg-type]

    def partial_file_then_fail(_image: object, path: object, *args: object) -> None:
        Path(str(path)).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    def partial_file_then_itk_error(_image: object, path: object, *args: object) -> None:
        Path(str(path)).write_bytes(b"partial")
        raise RuntimeError("Exception thrown in SimpleITK ImageFileWriter_Execute:\nNo space left on device")

    monkeypatch.setattr(pydicom.Dataset, "save_as", save_as_then_fail)
    monkeypatch.setattr(nib, "save", partial_file_then_fail)
    monkeypatch.setattr(sitk, "WriteImage", partial_file_then_itk_error)
    with pytest.raises(OutputError, match="No space left"):
        write_volume(volume, f"{outdir}/{name}")
    assert _listing(outdir) == []
    if name.endswith("/"):
        assert saved["slices"] == 3  # some slices had been written before the failure


def test_nan_results_and_bad_dtype_are_refused(sample_nifti: Path, tmp_path: Path) -> None:
    volume = read_volume(sample_nifti)
    data = volume.data.astype(np.float32)
    data[3, 4, 5] = np.nan
    with pytest.raises(OutputError, match="NaN"):
        write_volume(volume.with_data(data), tmp_path / "nan.nii.gz")
    with pytest.raises(ConfigError, match="dtype"):
        write_volume(volume, tmp_path / "x.nii.gz", dtype="complex64")
    with pytest.raises(OutputError, match="suffix"):
        write_volume(volume, tmp_path / "x.png")
    assert _listing(tmp_path) == []
