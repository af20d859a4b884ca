"""medidiff.metrics against hand-computed values and against scikit-image / MONAI on the same arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage
from skimage.metrics import normalized_root_mse, peak_signal_noise_ratio, structural_similarity

from medidiff import metrics
from medidiff.errors import ConfigError, InputError
from medidiff.io.volume import Volume


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    """A smooth random 3D reference (28, 30, 26) and a noisy copy of it."""
    rng = np.random.default_rng(0)
    reference = ndimage.gaussian_filter(rng.normal(size=(28, 30, 26)), 2.0) * 50 + 100
    return reference, reference + rng.normal(0, 1.0, reference.shape)


def test_psnr_of_a_constant_offset_matches_the_formula(pair: tuple[np.ndarray, np.ndarray]) -> None:
    reference, _ = pair
    peak = reference.max() - reference.min()
    assert metrics.psnr(reference, reference + 2.5) == pytest.approx(
        10 * math.log10(peak**2 / 2.5**2), abs=1e-9
    )
    # An explicit data_range replaces the peak, nothing else.
    assert metrics.psnr(reference, reference + 2.5, data_range=100.0) == pytest.approx(
        10 * math.log10(100.0**2 / 2.5**2), abs=1e-9
    )
    assert metrics.psnr(reference, reference) == math.inf


def test_nrmse_of_a_constant_offset_matches_the_formula(pair: tuple[np.ndarray, np.ndarray]) -> None:
    reference, _ = pair
    expected = math.sqrt(reference.size * 2.0**2) / float(np.linalg.norm(reference))
    assert metrics.nrmse(reference, reference + 2.0) == pytest.approx(expected, rel=1e-12)
    peak = reference.max() - reference.min()
    assert metrics.nrmse(reference, reference + 2.0, normalization="min-max") == pytest.approx(2.0 / peak)


def test_ssim_of_identical_volumes_is_one_and_of_a_scaled_constant_follows_the_formula() -> None:
    ref = np.full((16, 16, 16), 4.0)
    ref[0, 0, 0] = 0.0  # data_range 4
    assert metrics.ssim(ref, ref) == pytest.approx(1.0)
    # Constant regions: SSIM = (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1) with C1 = (0.01 L)^2; the map's
    # interior (away from the single odd voxel's window) is constant, so compare one deep voxel.
    local, _ = metrics.ssim_map(ref, ref * 0.5, data_range=4.0)
    c1 = (0.01 * 4.0) ** 2
    expected = (2 * 4.0 * 2.0 + c1) / (4.0**2 + 2.0**2 + c1)
    assert local[-1, -1, -1] == pytest.approx(expected, rel=1e-9)


def test_unmasked_metrics_equal_scikit_image(pair: tuple[np.ndarray, np.ndarray]) -> None:
    reference, test = pair
    peak = reference.max() - reference.min()
    assert metrics.psnr(reference, test) == pytest.approx(
        peak_signal_noise_ratio(reference, test, data_range=peak)
    )
    assert metrics.nrmse(reference, test) == pytest.approx(normalized_root_mse(reference, test))
    expected = structural_similarity(
        reference, test, data_range=peak, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert metrics.ssim(reference, test) == pytest.approx(expected, abs=1e-12)


def test_masked_metrics_use_only_the_mask_voxels(pair: tuple[np.ndarray, np.ndarray]) -> None:
    reference, test = pair
    mask = np.zeros(reference.shape, bool)
    mask[5:20, 6:22, 4:18] = True
    peak = reference.max() - reference.min()
    mse = float(np.mean((reference[mask] - test[mask]) ** 2))
    assert metrics.psnr(reference, test, mask=mask) == pytest.approx(10 * math.log10(peak**2 / mse))
    # Voxels outside the mask do not count at all.
    spoiled = test.copy()
    spoiled[~mask] = 0
    assert metrics.psnr(reference, spoiled, mask=mask) == pytest.approx(
        metrics.psnr(reference, test, mask=mask)
    )
    assert metrics.nrmse(reference, spoiled, mask=mask) == pytest.approx(
        normalized_root_mse(reference[mask], test[mask])
    )
    _, full = structural_similarity(
        reference,
        test,
        data_range=peak,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        full=True,
    )
    # The mask touches the 5-voxel border that scikit-image's own mean leaves out: those voxels drop out too.
    interior = (slice(5, -5),) * 3
    expected = float(full[interior][mask[interior]].mean())
    assert metrics.ssim(reference, test, mask=mask) == pytest.approx(expected, abs=1e-12)
    assert abs(expected - float(full[mask].mean())) > 1e-5  # the border exclusion is visible here
    everywhere = np.ones(reference.shape, bool)
    assert metrics.ssim(reference, test, mask=everywhere) == pytest.approx(metrics.ssim(reference, test))


def test_spacing_aware_ssim_matches_scikit_image_when_isotropic_and_monai_when_not(
    pair: tuple[np.ndarray, np.ndarray],
) -> None:
    import torch
    from monai.metrics import SSIMMetric

    reference, test = pair
    assert metrics.ssim(reference, test, sigma_mm=1.5, spacing=(1, 1, 1)) == pytest.approx(
        metrics.ssim(reference, test), abs=1e-12
    )
    spacing = (1.0, 1.0, 3.0)
    anisotropic = metrics.ssim(reference, test, sigma_mm=1.5, spacing=spacing)
    assert abs(anisotropic - metrics.ssim(reference, test)) > 1e-3  # the window really changed
    # MONAI takes per-axis windows but computes in float32; on zero-mean data that costs nothing, so compare
    # there (SSIM is invariant to scaling both images and data_range together, not to shifts).
    centred_ref, centred_test = reference - reference.mean(), test - reference.mean()
    peak = float(reference.max() - reference.min())
    sigmas = [1.5 / s for s in spacing]
    sizes = [2 * int(3.5 * s + 0.5) + 1 for s in sigmas]
    monai = SSIMMetric(spatial_dims=3, data_range=peak, win_size=sizes, kernel_sigma=sigmas)
    expected = monai(
        torch.from_numpy(centred_test)[None, None], torch.from_numpy(centred_ref)[None, None]
    ).item()
    ours = metrics.ssim(centred_ref, centred_test, data_range=peak, sigma_mm=1.5, spacing=spacing)
    assert ours == pytest.approx(expected, abs=1e-5)


def test_volumes_take_their_spacing_and_must_share_geometry(pair: tuple[np.ndarray, np.ndarray]) -> None:
    reference, test = pair
    affine = np.diag([1.0, 1.0, 3.0, 1.0])
    ref_vol, test_vol = Volume(reference, affine), Volume(test, affine)
    assert metrics.ssim(ref_vol, test_vol, sigma_mm=1.5) == pytest.approx(
        metrics.ssim(reference, test, sigma_mm=1.5, spacing=(1, 1, 3))
    )
    shifted = Volume(test, affine @ np.array([[1, 0, 0, 0.5], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]))
    with pytest.raises(InputError, match="different geometry"):
        metrics.psnr(ref_vol, shifted)
    with pytest.raises(InputError, match="differ"):
        metrics.psnr(reference, test[:, :, :-1])


def test_auto_mask_is_the_filled_foreground() -> None:
    grid = np.indices((40, 40, 40)) - 19.5
    radius = np.sqrt((grid**2).sum(axis=0))
    rng = np.random.default_rng(1)
    head = np.where(radius < 14, 100.0, 0.0)
    head[radius < 5] = 2.0  # a dark "ventricle" inside: below Otsu, but enclosed, so filled
    noisy = head + rng.normal(0, 3.0, head.shape)
    mask = metrics.foreground_mask(noisy)
    truth = radius < 14
    dice = 2 * (mask & truth).sum() / (mask.sum() + truth.sum())
    assert dice > 0.97
    assert mask[radius < 4].all()
    scores = metrics.compute_metrics(head, noisy, mask="auto")
    assert scores["mask"] == "auto" and scores["voxels"] == int(mask.sum())
    assert scores["psnr"] == pytest.approx(metrics.psnr(head, noisy, mask=mask))


def test_bad_arguments_raise_user_errors(pair: tuple[np.ndarray, np.ndarray]) -> None:
    reference, test = pair
    with pytest.raises(InputError, match="constant"):
        metrics.psnr(np.ones((8, 8, 8)), np.zeros((8, 8, 8)))
    with pytest.raises(ConfigError):
        metrics.psnr(reference, test, data_range=-1.0)
    with pytest.raises(ConfigError):
        metrics.nrmse(reference, test, normalization="max")
    with pytest.raises(InputError, match="empty"):
        metrics.psnr(reference, test, mask=np.zeros(reference.shape))
    with pytest.raises(InputError, match="smaller than the SSIM window"):
        metrics.ssim(reference[:8], test[:8])


def test_calibration_of_a_gaussian_error_with_its_true_std() -> None:
    """Errors drawn with a known, varying std: coverage matches the Gaussian figures and the map ranks them;
    a map half as wide covers only about 38% within 1 'std' (the overconfidence the benchmark reports).

    For std uniform on [0.5, 3] the correlation of an exact map with |error| is 0.45 in closed form:
    cov(s, s|z|) / (sd(s) sd(s|z|)) with E|z| = sqrt(2 / pi)."""
    from medidiff.metrics import calibration

    rng = np.random.default_rng(0)
    std = rng.uniform(0.5, 3.0, (40, 40, 40))
    reference = rng.normal(0, 10, std.shape)
    estimate = reference + std * rng.standard_normal(std.shape)
    good = calibration(reference, estimate, std)
    assert abs(good["coverage_1"] - 0.683) < 0.01 and abs(good["coverage_2"] - 0.954) < 0.01
    # Even an exact map correlates with |error| at only 0.45 here: |error| = std |z| scatters around std.
    assert abs(good["coverage_3"] - 0.997) < 0.005 and abs(good["std_error_corr"] - 0.45) < 0.02
    narrow = calibration(reference, estimate, std / 2)
    assert abs(narrow["coverage_1"] - 0.383) < 0.01 and abs(narrow["coverage_2"] - 0.683) < 0.01
    masked = calibration(reference, estimate, std, mask=std > 2.0)
    assert masked["mean_std"] > 2.0
