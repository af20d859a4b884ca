"""medidiff.transforms: the ``Restored`` MONAI dictionary transform in a real
MONAI ``Compose`` on a NIfTI crop of the sample brain (tiny untrained model: mechanics, not quality)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def nifti_crop(tmp_path_factory: pytest.TempPathFactory, sample_nifti: Path) -> Path:
    """A noisy (24, 24, 24) int16 crop of the sample brain with an oblique-free but shifted affine."""
    brain = nib.load(str(sample_nifti))
    assert isinstance(brain, nib.Nifti1Image)
    start = np.array([26, 35, 28])
    data = np.asarray(brain.dataobj)[26:50, 35:59, 28:52].astype(np.float64)
    noisy = np.rint(data + np.random.default_rng(0).normal(0, 60, data.shape)).astype(np.int16)
    affine = brain.affine.copy()
    affine[:3, 3] += brain.affine[:3, :3] @ start
    path = tmp_path_factory.mktemp("data") / "crop.nii.gz"
    nib.save(nib.Nifti1Image(noisy, affine), str(path))
    return path


# ----------------------------------------------------------------------------- Restored
def test_restored_in_a_monai_compose_keeps_affine_shape_and_meta(
    nifti_crop: Path, tiny_model_path: Path
) -> None:
    from monai.data import MetaTensor
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

    from medidiff.transforms import Restored

    load = Compose([LoadImaged(keys="image"), EnsureChannelFirstd(keys="image")])
    pipeline = Compose(
        [*load.transforms, Restored(keys="image", task="denoise", model=tiny_model_path, sigma=60.0)]
    )
    before = load({"image": str(nifti_crop)})["image"]
    out = pipeline({"image": str(nifti_crop)})["image"]
    assert isinstance(out, MetaTensor)
    assert out.shape == before.shape == (1, 24, 24, 24)
    np.testing.assert_allclose(out.affine.numpy(), nib.load(str(nifti_crop)).affine, atol=1e-5)  # type: ignore[attr-defined]
    np.testing.assert_array_equal(out.affine.numpy(), before.affine.numpy())
    assert out.meta["filename_or_obj"] == before.meta["filename_or_obj"] == str(nifti_crop)
    assert torch.isfinite(out).all() and not torch.equal(out.as_tensor(), before.as_tensor())


def test_restored_inpaints_with_a_mask_key(nifti_crop: Path, tiny_model_path: Path, tmp_path: Path) -> None:
    """``mask_key`` reads the mask from the same dictionary; known voxels pass through unchanged."""
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

    from medidiff.nets.checkpoint import load_model
    from medidiff.transforms import Restored

    image = nib.load(str(nifti_crop))
    assert isinstance(image, nib.Nifti1Image)
    missing = np.zeros(image.shape, np.uint8)
    missing[8:14, 8:14, 8:14] = 1
    mask_path = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image(missing, image.affine), str(mask_path))
    keys = ["image", "mask"]
    restored = Restored(
        keys="image", task="inpaint", mask_key="mask", model=load_model(tiny_model_path), steps=2
    )
    pipeline = Compose([LoadImaged(keys=keys), EnsureChannelFirstd(keys=keys), restored])
    data = pipeline({"image": str(nifti_crop), "mask": str(mask_path)})
    original = np.asarray(image.dataobj, dtype=np.float32)
    out = data["image"][0].numpy()
    known = missing == 0
    assert np.array_equal(out[known], original[known])
    assert not np.array_equal(out[~known], original[~known])
    assert data["mask"] is not data["image"]


def test_restored_honours_missing_keys(tiny_model_path: Path) -> None:
    from medidiff.transforms import Restored

    assert Restored(keys="image", allow_missing_keys=True, model=tiny_model_path)({"other": 1}) == {
        "other": 1
    }
    with pytest.raises(KeyError):
        Restored(keys="image", model=tiny_model_path)({"other": 1})
