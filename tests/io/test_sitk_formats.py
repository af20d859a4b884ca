"""NRRD and MetaImage through the SimpleITK-backed MONAI reader: round trips and LPS geometry on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from medidiff.errors import InputError
from medidiff.io import Volume, read_volume, write_volume


def _oblique_volume(oblique_axes: np.ndarray) -> Volume:
    rng = np.random.default_rng(3)
    data = rng.normal(0, 1, size=(9, 8, 7)).astype(np.float32)
    affine = np.eye(4)
    affine[:3, :3] = oblique_axes @ np.diag([0.8, 1.2, 3.0])
    affine[:3, 3] = [12.5, -40.0, 7.0]
    return Volume(data=data, affine=affine)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_round_trip_keeps_voxels_dtype_and_affine(
    suffix: str, tmp_path: Path, oblique_axes: np.ndarray
) -> None:
    volume = _oblique_volume(oblique_axes)
    path = write_volume(volume, tmp_path / f"volume{suffix}")
    back = read_volume(path)
    assert back.meta["format"] == ("nrrd" if suffix == ".nrrd" else "metaimage")
    assert back.data.dtype == np.float32
    assert np.array_equal(back.data, volume.data)
    assert np.allclose(back.affine, volume.affine, atol=1e-6)


def test_file_holds_lps_geometry_as_simpleitk_sees_it(tmp_path: Path, oblique_axes: np.ndarray) -> None:
    volume = _oblique_volume(oblique_axes)
    image = sitk.ReadImage(str(write_volume(volume, tmp_path / "v.nrrd")))
    assert image.GetSize() == volume.shape  # ITK's index order is I, J, K too
    flip = np.diag([-1.0, -1.0, 1.0])
    assert np.allclose(image.GetOrigin(), flip @ volume.affine[:3, 3])
    assert np.allclose(image.GetSpacing(), [0.8, 1.2, 3.0])
    assert np.allclose(np.asarray(image.GetDirection()).reshape(3, 3), flip @ oblique_axes, atol=1e-6)
    array = sitk.GetArrayFromImage(image)  # (K, J, I)
    assert np.array_equal(np.transpose(array, (2, 1, 0)), volume.data)


def test_nifti_to_nrrd_to_nifti_keeps_the_sample(sample_nifti: Path, tmp_path: Path) -> None:
    volume = read_volume(sample_nifti)
    back = read_volume(
        write_volume(read_volume(write_volume(volume, tmp_path / "s.nrrd")), tmp_path / "s.nii")
    )
    assert back.data.dtype == np.int16
    assert np.array_equal(back.data, volume.data)
    assert np.allclose(back.affine, volume.affine)


def test_4d_nrrd_volume_selection(tmp_path: Path) -> None:
    data = np.stack([np.full((3, 4, 5), 10 * t, dtype=np.int16) for t in range(2)])  # (T, I, J, K)
    image = sitk.GetImageFromArray(np.transpose(data, (0, 3, 2, 1)), isVector=False)  # (T, K, J, I)
    path = tmp_path / "four.nrrd"
    sitk.WriteImage(image, str(path))
    with pytest.raises(InputError, match="4D with 2 volumes"):
        read_volume(path)
    volume = read_volume(path, volume_index=1)
    assert volume.shape == (3, 4, 5) and np.all(volume.data == 10)


def test_detached_header_formats_are_read_but_not_written(tmp_path: Path, oblique_axes: np.ndarray) -> None:
    from medidiff.errors import OutputError

    volume = _oblique_volume(oblique_axes)
    mha = read_volume(write_volume(volume, tmp_path / "v.mha"))
    sitk.WriteImage(sitk.ReadImage(str(tmp_path / "v.mha")), str(tmp_path / "v.mhd"))  # header + .zraw
    sitk.WriteImage(sitk.ReadImage(str(tmp_path / "v.mha")), str(tmp_path / "v.nhdr"))  # header + .raw.gz
    for name in ("v.mhd", "v.nhdr"):
        back = read_volume(tmp_path / name)
        assert np.array_equal(back.data, mha.data) and np.allclose(back.affine, mha.affine)
        with pytest.raises(OutputError, match=r"\.nrrd or \.mha"):
            write_volume(volume, tmp_path / f"out_{name}")
