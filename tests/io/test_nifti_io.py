"""NIfTI reading and writing: bit-exact voxels, affine, qform/sform matrices and codes."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medidiff.errors import InputError
from medidiff.io import read_volume, write_volume


def _load_nifti(path: Path) -> nib.Nifti1Image:
    """nibabel.load, typed (it is declared to return any image class)."""
    image = nib.load(str(path))
    assert isinstance(image, nib.Nifti1Image)
    return image


def _codes(path: Path) -> tuple[int, int]:
    header = _load_nifti(path).header
    return int(header["qform_code"]), int(header["sform_code"])


def test_sample_nifti_round_trip_is_bit_exact(sample_nifti: Path, tmp_path: Path) -> None:
    volume = read_volume(sample_nifti)
    out = write_volume(volume, tmp_path / "copy.nii.gz")
    original, copy = _load_nifti(sample_nifti), _load_nifti(out)
    assert copy.get_data_dtype() == original.get_data_dtype() == np.int16
    assert np.array_equal(np.asarray(copy.dataobj), np.asarray(original.dataobj))
    assert np.array_equal(copy.affine, original.affine)
    assert _codes(out) == _codes(sample_nifti) == (4, 4)


def test_different_qform_and_sform_survive_with_their_codes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 60000, size=(7, 6, 5), dtype=np.uint16)  # uint16: torch has no such type
    image = nib.Nifti1Image(data, np.eye(4))
    qform = np.array([[-1.2, 0, 0, 30.0], [0, 1.1, 0, -20.0], [0, 0, 2.5, 5.0], [0, 0, 0, 1]])
    sform = qform.copy()
    sform[0, 1] = 0.3  # a shear only the sform can hold
    image.set_qform(qform, code=1)
    image.set_sform(sform, code=2)
    source = tmp_path / "sheared.nii"
    nib.save(image, str(source))

    volume = read_volume(source)
    assert volume.data.dtype == np.uint16
    stored_sform = _load_nifti(source).header.get_sform()  # float32 on disk
    assert np.array_equal(volume.affine, stored_sform)  # the sform wins when its code > 0
    out = write_volume(volume, tmp_path / "out.nii")
    written = _load_nifti(out)
    assert np.array_equal(np.asarray(written.dataobj), data)
    assert written.get_data_dtype() == np.uint16
    assert _codes(out) == (1, 2)
    assert np.allclose(written.header.get_qform(), qform, atol=1e-5)
    assert np.array_equal(written.header.get_sform(), stored_sform)
    assert np.allclose(stored_sform, sform, atol=1e-6)


def test_changed_geometry_writes_the_new_affine(sample_nifti: Path, tmp_path: Path) -> None:
    volume = read_volume(sample_nifti)
    moved = volume.affine.copy()
    moved[:3, 3] += [5.0, -3.0, 1.0]
    volume.affine = moved
    out = write_volume(volume, tmp_path / "moved.nii.gz")
    assert np.allclose(_load_nifti(out).affine, moved)
    assert np.allclose(_load_nifti(out).header.get_qform(), moved)


def test_4d_needs_a_volume_index(tmp_path: Path) -> None:
    data = np.stack([np.full((4, 5, 6), t, dtype=np.float32) for t in range(3)], axis=-1)
    path = tmp_path / "series4d.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 3.0, 1.0])), str(path))
    with pytest.raises(InputError, match=r"4D with 3 volumes.*--volume"):
        read_volume(path)
    volume = read_volume(path, volume_index=2)
    assert volume.shape == (4, 5, 6)
    assert np.all(volume.data == 2)
    assert volume.meta["n_volumes"] == 3 and volume.meta["volume_index"] == 2
    with pytest.raises(InputError, match="out of range"):
        read_volume(path, volume_index=3)


def test_float_data_to_integer_dtype_is_rounded_and_clipped(sample_nifti: Path, tmp_path: Path) -> None:
    volume = read_volume(sample_nifti)
    values = np.linspace(-10.6, 300.4, volume.data.size).reshape(volume.shape).astype(np.float32)
    result = volume.with_data(values)
    out = write_volume(result, tmp_path / "u8.nii.gz", dtype="uint8")
    back = read_volume(out)
    assert back.data.dtype == np.uint8
    assert np.array_equal(back.data, np.clip(np.rint(values), 0, 255).astype(np.uint8))
    # without --dtype the input's int16 is kept
    back16 = read_volume(write_volume(result, tmp_path / "i16.nii.gz"))
    assert back16.data.dtype == np.int16
    assert np.array_equal(back16.data, np.rint(values).astype(np.int16))


def test_big_endian_nifti_reads_with_native_byte_order(tmp_path: Path) -> None:
    """Big-endian files (nibabel's own anatomical.nii is one) read correctly and round-trip."""
    data = np.arange(4 * 5 * 6, dtype=">i2").reshape(4, 5, 6)
    path = tmp_path / "big.nii"
    nib.Nifti1Image(data, np.diag([2.0, 2.0, 3.0, 1.0])).to_filename(path)
    vol = read_volume(path)
    assert vol.data.dtype.isnative and np.array_equal(vol.data, data.astype(np.int16))
    write_volume(vol, tmp_path / "out.nii.gz")
    assert np.array_equal(read_volume(tmp_path / "out.nii.gz").data, vol.data)
