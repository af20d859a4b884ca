"""The degradation simulator: records reproduce outputs exactly; measured effects match the request."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medidiff.degrade import DEFAULTS, KINDS, apply_degradation, degrade, draw_parameters
from medidiff.errors import ConfigError, InputError
from medidiff.io.volume import Volume
from medidiff.metrics import foreground_mask
from medidiff.restoration.operators import GaussianBlur


@pytest.fixture(scope="module")
def brain(sample_nifti: Path) -> Volume:
    """The sample brain (76, 94, 79), 2 mm, as read by nibabel (int16 data)."""
    image = nib.load(sample_nifti)
    return Volume(np.asarray(image.dataobj), image.affine, {"dtype": "int16"}, str(sample_nifti))


@pytest.fixture(scope="module")
def small(brain: Volume) -> Volume:
    """A cheaper anisotropic copy: every other voxel in-plane, spacing (4, 4, 2) mm."""
    affine = brain.affine @ np.diag([2.0, 2.0, 1.0, 1.0])
    return Volume(np.ascontiguousarray(brain.data[::2, ::2, :]), affine, {}, "small")


@pytest.mark.parametrize("kind", KINDS)
def test_seed_and_record_reproduce_the_exact_output(small: Volume, kind: str) -> None:
    first = degrade(small, kind, seed=7)
    assert first.record["kind"] == kind and first.record["seed"] == 7
    assert first.record["medidiff_version"] and first.record["input_shape"] == list(small.shape)
    replayed = apply_degradation(small, json.loads(json.dumps(first.record)))
    assert np.array_equal(first.volume.data, replayed.volume.data)
    assert np.array_equal(first.volume.affine, replayed.volume.affine)
    assert np.array_equal(degrade(small, kind, seed=7).volume.data, first.volume.data)
    if kind in ("gaussian", "rician", "holes", "slices", "bias", "kspace"):  # the seeded kinds
        assert not np.array_equal(degrade(small, kind, seed=8).volume.data, first.volume.data)
    assert first.volume.data.dtype == np.float32 and first.volume.meta["dtype"] == "float32"
    assert (first.mask is not None) == (kind in ("holes", "slices"))


def test_gaussian_noise_has_the_requested_std(brain: Volume) -> None:
    result = degrade(brain, "gaussian", seed=1, sigma="5%")
    requested = 0.05 * float(np.percentile(brain.data, 99.5))
    assert result.record["params"]["sigma"] == pytest.approx(requested)
    measured = float(np.std(result.volume.data - brain.data))
    assert measured == pytest.approx(requested, rel=0.01)
    assert degrade(brain, "gaussian", seed=1, sigma=30).record["params"]["sigma"] == 30.0


def test_rician_noise_has_the_requested_sigma_in_air(brain: Volume) -> None:
    result = degrade(brain, "rician", seed=2, sigma="10%")
    sigma = result.record["params"]["sigma"]
    air = brain.data == 0
    # In air the magnitude is Rayleigh(sigma): E[M^2] = 2 sigma^2.
    measured = float(np.sqrt(np.mean(result.volume.data[air].astype(np.float64) ** 2) / 2))
    assert measured == pytest.approx(sigma, rel=0.01)
    assert result.volume.data.min() >= 0


def test_bias_field_has_the_requested_amplitude(brain: Volume) -> None:
    result = degrade(brain, "bias", seed=3, amplitude=0.25)
    inside = foreground_mask(brain) & (brain.data > 0)
    field = result.volume.data[inside] / brain.data[inside].astype(np.float32)
    assert field.max() == pytest.approx(1.25, abs=1e-4)
    assert field.min() == pytest.approx(0.75, abs=1e-4)
    constant = Volume(np.ones((20, 22, 24), np.float32), np.eye(4))  # no foreground: the whole grid counts
    flat = degrade(constant, "bias", seed=3, amplitude=0.3).volume.data
    assert flat.max() == pytest.approx(1.3, abs=1e-5) and flat.min() == pytest.approx(0.7, abs=1e-5)


def test_thick_slices_have_the_requested_spacing_and_a_slab_centred_affine(small: Volume) -> None:
    result = degrade(small, "thick", axis=2, factor=3)
    out = result.volume
    assert out.shape == (small.shape[0], small.shape[1], small.shape[2] // 3)
    assert out.spacing[2] == pytest.approx(3 * small.spacing[2])
    assert out.spacing[:2] == pytest.approx(small.spacing[:2])
    # voxel k of the output is the centre of input slices 3k..3k+2, i.e. input index 3k + 1
    assert np.allclose(out.affine @ [0, 0, 5, 1], small.affine @ [0, 0, 16, 1])
    assert result.record["params"]["output_spacing"] == pytest.approx(out.spacing[2])


def test_holes_fill_boxes_of_the_requested_size_and_leave_the_rest(brain: Volume) -> None:
    result = degrade(brain, "holes", seed=4, holes=3, hole_size_mm=16.0)
    boxes = result.record["params"]["boxes"]
    assert len(boxes) == 3 and all(box[3:] == [8, 8, 8] for box in boxes)  # 16 mm / 2 mm
    mask = result.mask.astype(bool)
    assert np.all(result.volume.data[mask] == 0)
    assert np.array_equal(result.volume.data[~mask], brain.data[~mask].astype(np.float32))
    foreground = foreground_mask(brain)
    for i, j, k, *_ in boxes:  # centred on anatomy, not in the air
        assert foreground[i : i + 8, j : j + 8, k : k + 8].mean() > 0.5


def test_missing_slices_are_whole_planes_through_the_anatomy(brain: Volume) -> None:
    result = degrade(brain, "slices", seed=5, axis=1, fraction=0.2)
    indices = result.record["params"]["indices"]
    mask = result.mask.astype(bool)
    assert np.array_equal(np.flatnonzero(mask.all(axis=(0, 2))), np.array(indices))
    assert mask.sum() == len(indices) * brain.shape[0] * brain.shape[2]
    through_anatomy = np.flatnonzero(foreground_mask(brain).any(axis=(0, 2)))
    assert set(indices) <= set(through_anatomy.tolist())
    assert len(indices) == round(0.2 * len(through_anatomy))


def test_blur_is_the_operator_with_sigma_in_mm(small: Volume) -> None:
    result = degrade(small, "blur", blur_mm=4.0)
    spec = result.record["params"]["operator"]
    assert spec["sigma"] == pytest.approx([1.0, 1.0, 2.0])  # 4 mm over (4, 4, 2) mm voxels
    expected = GaussianBlur([1.0, 1.0, 2.0]).double()(
        torch.from_numpy(small.data.astype(np.float64))[None, None]
    )
    assert np.allclose(result.volume.data, expected[0, 0].numpy().astype(np.float32))


def test_kspace_undersampling_keeps_centre_lines_and_drops_the_others() -> None:
    n = 64
    base = np.ones((8, n, 6)) * 5.0
    record = draw_parameters(Volume(base, np.eye(4)), "kspace", seed=0, axis=1, acceleration=4.0)
    lines = record["params"]["lines"]
    centre = round(0.08 * n)
    assert set(range((n - centre + 1) // 2, (n - centre + 1) // 2 + centre)) <= set(lines)
    assert 0.15 * n < len(lines) < 0.40 * n
    # A constant lives on the centre (DC) line: untouched. A frequency that was dropped disappears.
    assert np.allclose(apply_degradation(Volume(base, np.eye(4)), record).volume.data, 5.0, atol=1e-5)
    dropped = next(f for f in range(2, n // 2) if (n // 2 + f) not in lines and (n // 2 - f) not in lines)
    wave = base + np.cos(2 * np.pi * dropped * np.arange(n) / n)[None, :, None]
    assert np.allclose(apply_degradation(Volume(wave, np.eye(4)), record).volume.data, 5.0, atol=1e-4)


def test_bad_requests_raise_user_errors(small: Volume) -> None:
    with pytest.raises(ConfigError, match="unknown degradation"):
        degrade(small, "warp")
    with pytest.raises(ConfigError, match="does not take"):
        degrade(small, "blur", sigma="5%")
    with pytest.raises(ConfigError, match="auto"):
        degrade(small, "gaussian", sigma="auto")
    with pytest.raises(ConfigError):
        degrade(small, "bias", amplitude=1.5)
    record = draw_parameters(small, "gaussian", seed=0)
    other = Volume(np.zeros((10, 10, 10), np.float32), np.eye(4))
    with pytest.raises(InputError, match="shape"):
        apply_degradation(other, record)
    with pytest.raises(ConfigError, match="invalid"):
        apply_degradation(small, {"kind": "gaussian"})
    assert set(DEFAULTS) == set(KINDS)
