"""medidiff.transforms: the invertible Normalizer, and the ``Restored`` MONAI dictionary transform in a real
MONAI ``Compose`` on a NIfTI crop of the sample brain (tiny untrained model: mechanics, not quality)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medidiff.transforms import Normalizer


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


def test_importing_transforms_does_not_import_monai() -> None:
    """The Normalizer is used by light code paths; MONAI (seconds to import) loads only for Restored."""
    code = "import sys, medidiff.transforms; print('monai' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"


# ----------------------------------------------------------------------------- Normalizer
def test_normalizer_maps_percentiles_to_the_model_range_and_back() -> None:
    rng = np.random.default_rng(3)
    data = rng.gamma(2.0, 100.0, (20, 20, 20)).astype(np.float32)
    norm = Normalizer(smooth_sigma=0.0).fit(data)
    low, high = np.percentile(data, [0.5, 99.5])
    assert (norm.low, norm.high) == pytest.approx((low, high), rel=1e-5)
    model = norm.forward(data)
    assert model.dtype == np.float32
    assert float(np.percentile(model, 0.5)) == pytest.approx(-1.0, abs=1e-4)
    assert float(np.percentile(model, 99.5)) == pytest.approx(1.0, abs=1e-4)
    np.testing.assert_allclose(norm.invert(model), data, rtol=1e-5, atol=1e-3)
    assert norm.sigma_from_model(norm.sigma_to_model(7.0)) == pytest.approx(7.0)
    assert norm.sigma_to_model(high - low) == pytest.approx(2.0)


def test_normalizer_rounds_and_clips_integer_outputs() -> None:
    norm = Normalizer(smooth_sigma=0.0, low=0.0, high=200.0)
    out = norm.invert(np.array([-2.0, 0.004, 0.5, 400.0]), np.uint8)
    assert out.dtype == np.uint8 and out.tolist() == [0, 100, 150, 255]


def test_normalizer_barely_moves_under_noise(tmp_path: Path, sample_nifti: Path) -> None:
    """Percentiles are taken after light smoothing: 5% noise moves the fitted range by under 3%."""
    brain = np.asarray(nib.load(str(sample_nifti)).dataobj, dtype=np.float32)  # type: ignore[attr-defined]
    noisy = brain + np.random.default_rng(4).normal(0, 0.05 * brain.max(), brain.shape).astype(np.float32)
    clean, dirty = Normalizer().fit(brain), Normalizer().fit(noisy)
    assert (
        clean.high is not None and dirty.high is not None and clean.low is not None and dirty.low is not None
    )
    span = clean.high - clean.low
    assert abs(dirty.high - clean.high) < 0.03 * span and abs(dirty.low - clean.low) < 0.03 * span


def test_normalizer_refuses_use_before_fit() -> None:
    with pytest.raises(RuntimeError, match="before fit"):
        Normalizer().forward(np.zeros((2, 2, 2)))
