"""The training patch pipeline: air cleaning keeps the head and removes white noise around it."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from medidiff.training.data import smooth_air


def test_smooth_air_removes_air_noise_and_keeps_the_head() -> None:
    rng = np.random.default_rng(0)
    grid = np.indices((40, 40, 40)).astype(np.float32)
    head = ((grid - 20) ** 2).sum(0) < 12**2
    data = np.where(head, 1000.0, 0.0) + 20.0 * rng.standard_normal(head.shape)
    data = data.astype(np.float32)
    cleaned = smooth_air(data)
    assert np.array_equal(cleaned[head], data[head])
    far = ((grid - 20) ** 2).sum(0) > 17**2
    high_freq = lambda a: float((a - gaussian_filter(a, 1.0))[far].std())  # noqa: E731
    assert high_freq(data) > 10.0 and high_freq(cleaned) < 0.1 * high_freq(data)
    assert abs(float(cleaned[far].mean()) - float(data[far].mean())) < 2.0  # the air level is kept


def test_anisotropic_patches_squash_anatomy_along_one_random_axis() -> None:
    """aniso_prob=1: a 30 mm ball on a 1 mm grid spans ~30 voxels in-plane, ~10 along the 3 mm axis."""
    import torch

    from medidiff.training.data import RandResampleRotated

    grid = np.indices((120, 120, 120)).astype(np.float32)
    ball = torch.from_numpy((((grid - 60) ** 2).sum(0) < 15**2)[None].astype(np.float32))
    transform = RandResampleRotated(
        ["image"],
        (48, 48, 48),
        (1.0, 1.0),
        0.0,
        resample_prob=1.0,
        aniso_prob=1.0,
        aniso_spacing_range=(3, 3),
    )
    transform.set_random_state(seed=0)
    thick_axes = []
    for _ in range(6):
        patch = transform({"image": ball, "spacing": np.ones(3)})["image"][0].numpy() > 0.5
        extent = [int(patch.any(axis=tuple(b for b in range(3) if b != a)).sum()) for a in range(3)]
        thick = int(np.argmin(extent))
        assert 8 <= extent[thick] <= 12 and all(27 <= e <= 33 for a, e in enumerate(extent) if a != thick)
        thick_axes.append(thick)
    assert len(set(thick_axes)) > 1  # the thick axis is drawn at random


def test_thick_slice_profile_is_as_wide_as_the_slice_spacing() -> None:
    """The Gaussian profile's FWHM is the slice spacing, less what the native voxel already integrates."""
    from medidiff.training.data import RandResampleRotated

    transform = RandResampleRotated(
        ["image"], (8, 8, 8), (1, 1), 0.0, aniso_prob=1.0, aniso_spacing_range=(3, 3)
    )
    transform.set_random_state(seed=0)
    drawn = transform._thick_axis(1.0, np.array([1.0, 1.0, 0.5]))
    assert drawn is not None
    axis, spacing, sigma_vox = drawn
    native = [1.0, 1.0, 0.5][axis]
    assert spacing == 3.0
    assert abs(sigma_vox * native * 2.3548 - np.sqrt(9.0 - native**2)) < 1e-3


def test_isotropic_patches_are_unchanged_by_the_aniso_options_when_off() -> None:
    import torch

    from medidiff.training.data import RandResampleRotated

    image = torch.from_numpy(np.random.default_rng(1).standard_normal((1, 60, 60, 60)).astype(np.float32))
    patches = []
    for extra in ({}, {"aniso_prob": 0.0, "aniso_spacing_range": (2.0, 3.0)}):
        transform = RandResampleRotated(["image"], (16, 16, 16), (1.0, 1.5), 10.0, 1.0, **extra)
        transform.set_random_state(seed=3)
        patches.append(transform({"image": image, "spacing": np.ones(3)})["image"])
    assert torch.equal(patches[0], patches[1])


def test_bias_correction_flattens_a_shaded_training_volume(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import nibabel as nib

    from medidiff.training.data import load_training_volume

    grid = np.indices((48, 48, 48)).astype(np.float32)
    head = ((grid - 24) ** 2).sum(0) < 20**2
    rng = np.random.default_rng(2)
    tissue = np.where(head, 1000.0 + 30.0 * rng.standard_normal(head.shape), 0.0)
    field = np.exp(0.3 * (grid[0] - 24) / 24)  # +-35% across the head
    path = tmp_path / "shaded.nii.gz"
    nib.save(nib.Nifti1Image((tissue * field).astype(np.float32), np.diag([2.0, 2.0, 2.0, 1.0])), path)
    inner = ((grid - 24) ** 2).sum(0) < 16**2

    def spread(vol: dict) -> float:  # type: ignore[type-arg]
        x = vol["image"][0].numpy()[inner]
        return float(np.std(x) / np.mean(x))

    shaded = load_training_volume(path, clean_air=False)
    flat = load_training_volume(path, clean_air=False, bias_correct=True)
    assert spread(shaded) > 0.08 and spread(flat) < 0.5 * spread(shaded)
