"""The classical baselines on small real arrays: each improves on its degraded input, and the geometry of
the thick-slice interpolation matches the slice-profile operator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medidiff.benchmark import baselines
from medidiff.errors import ConfigError, InputError
from medidiff.io import read_volume
from medidiff.metrics import foreground_mask, psnr
from medidiff.restoration.operators import BiasField, SliceProfile


@pytest.fixture(scope="module")
def brain(sample_nifti: Path) -> np.ndarray:
    """A 40 x 40 x 32 crop through the middle of the sample brain, float64."""
    data = np.asarray(read_volume(sample_nifti).data, dtype=np.float64)
    return np.ascontiguousarray(data[18:58, 27:67, 24:56])


@pytest.fixture(scope="module")
def noisy(brain: np.ndarray) -> tuple[np.ndarray, float]:
    sigma = 0.1 * float(np.percentile(brain, 99.5))
    return brain + np.random.default_rng(0).normal(0.0, sigma, brain.shape), sigma


@pytest.mark.parametrize("name", ["nlm", "tv", "bm4d_denoise"])
def test_denoisers_improve_psnr(name: str, brain: np.ndarray, noisy: tuple[np.ndarray, float]) -> None:
    if name == "bm4d_denoise":
        pytest.importorskip("bm4d")
    data, sigma = noisy
    out = getattr(baselines, name)(data, sigma)
    assert out.shape == brain.shape
    assert psnr(brain, out) > psnr(brain, data) + 3.0


def test_denoisers_need_a_sigma(noisy: tuple[np.ndarray, float]) -> None:
    with pytest.raises(ConfigError, match="true noise sigma"):
        baselines.tv(noisy[0], 0.0)


def test_rician_correction_lowers_the_noise_floor() -> None:
    sigma = 10.0
    floor = np.full((4, 4, 4), sigma * np.sqrt(np.pi / 2))  # the mean magnitude of pure noise
    assert np.allclose(baselines.rician_corrected(floor, sigma), 0.0, atol=1e-6)


def test_biharmonic_fills_holes_and_keeps_known_voxels(brain: np.ndarray) -> None:
    missing = np.zeros(brain.shape, dtype=bool)
    missing[8:14, 10:16, 6:12] = True  # two separate regions: each is solved on its own box
    missing[25:30, 20:26, 18:24] = True
    degraded = np.where(missing, 0.0, brain)
    out = baselines.biharmonic(degraded, missing)
    np.testing.assert_array_equal(out[~missing], brain[~missing])
    assert psnr(brain, out, mask=missing) > psnr(brain, degraded, mask=missing) + 10.0


def test_biharmonic_local_boxes_match_the_whole_problem(brain: np.ndarray) -> None:
    """One local problem per region gives the same fill as scikit-image's single global solve."""
    from skimage.restoration import inpaint_biharmonic

    missing = np.zeros(brain.shape, dtype=bool)
    missing[15:19, 15:19, 12:16] = True
    degraded = np.where(missing, 0.0, brain)
    ours = baselines.biharmonic(degraded, missing, margin=4)
    whole = inpaint_biharmonic(degraded, missing)
    assert np.max(np.abs(ours - whole)[missing]) < 1e-3 * float(brain.max())


def test_biharmonic_refuses_an_all_missing_mask(brain: np.ndarray) -> None:
    with pytest.raises(InputError, match="every voxel"):
        baselines.biharmonic(brain, np.ones(brain.shape))


def test_n4_removes_a_bias_field(brain: np.ndarray) -> None:
    from medidiff.benchmark.scoring import psnr_scale_fit

    field = BiasField(
        2, torch.tensor([0.0, 0.25, -0.2, 0.15, 0.0, 0.1, 0.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    )
    biased = brain * np.exp(field.log_field(brain.shape).numpy())
    fg = foreground_mask(brain)
    corrected = baselines.n4(biased, (2.0, 2.0, 2.0))
    assert psnr_scale_fit(brain, corrected, fg) > psnr_scale_fit(brain, biased, fg) + 2.0


def test_cubic_follows_the_slice_profile_geometry() -> None:
    """A linear ramp along the axis survives the slice profile (symmetric Gaussian) exactly, so cubic
    interpolation from the right slice centres gives it back; an offset of half a fine slice would not."""
    n, factor = 96, 4
    ramp = np.broadcast_to(np.arange(n, dtype=np.float64), (6, 5, n)).copy()
    thick = SliceProfile(2, factor, 1.5).double()(torch.from_numpy(ramp)[None, None])[0, 0].numpy()
    out = baselines.cubic_slices(thick, axis=2, factor=factor)
    assert out.shape == ramp.shape
    # The ends bend (replicate padding of the profile, constant extension of the spline); their effect on
    # the spline decays by ~0.27 per thick slice. A half-slice offset would be off by 0.5 everywhere.
    interior = slice(6 * factor, n - 6 * factor)
    np.testing.assert_allclose(out[:, :, interior], ramp[:, :, interior], atol=0.01)


def test_cubic_beats_slice_replication(brain: np.ndarray) -> None:
    thick = SliceProfile(2, 4, 2.0).double()(torch.from_numpy(brain)[None, None])[0, 0].numpy()
    assert psnr(brain, baselines.cubic_slices(thick, 2, 4)) > psnr(
        brain, baselines.nearest_slices(thick, 2, 4)
    )
