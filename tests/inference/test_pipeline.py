"""``medidiff.restore`` end to end on crops of the real sample brain, with a tiny untrained model.

An untrained network cannot restore anything, so these tests check the mechanics the pipeline owns: geometry
and dtype in and out, known voxels kept bit for bit, the thick-slice output grid, seeds, the noise level it
reports, MetaTensor round trips, and refusal of bad input before any model is loaded. Restoration quality
with a trained model lives in benchmarks/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import medidiff
from medidiff.errors import ConfigError, InputError
from medidiff.io import read_volume
from medidiff.io.volume import Volume
from medidiff.restoration.operators import SliceProfile


@pytest.fixture(scope="module")
def brain(sample_nifti: Path) -> Volume:
    """The 2 mm MNI152 T1, (76, 94, 79) int16."""
    return read_volume(sample_nifti)


def _crop(volume: Volume, start: tuple[int, int, int], size: tuple[int, int, int]) -> Volume:
    """A sub-volume with the affine moved to its first voxel."""
    index = tuple(slice(s, s + n) for s, n in zip(start, size, strict=True))
    affine = volume.affine.copy()
    affine[:3, 3] = volume.affine[:3, :3] @ np.asarray(start, dtype=np.float64) + volume.affine[:3, 3]
    return Volume(np.ascontiguousarray(volume.data[index]), affine, dict(volume.meta), volume.source)


@pytest.fixture(scope="module")
def noisy(brain: Volume) -> Volume:
    """A 24^3 crop through the brain with Gaussian noise (sigma 60), int16."""
    crop = _crop(brain, (26, 35, 28), (24, 24, 24))
    rng = np.random.default_rng(0)
    data = np.rint(crop.data + rng.normal(0.0, 60.0, crop.shape)).astype(np.int16)
    return Volume(data, crop.affine, crop.meta, "noisy crop")


def _hole(shape: tuple[int, int, int]) -> np.ndarray:
    """A missing block and a missing slice (nonzero = missing)."""
    mask = np.zeros(shape, np.uint8)
    mask[8:14, 6:12, 9:15] = 1
    mask[:, :, 18] = 1
    return mask


# ----------------------------------------------------------------------------- every task
@pytest.mark.parametrize(
    "kwargs",
    [
        {"task": "denoise"},
        {"task": "inpaint", "steps": 3},
        {"task": "restore", "degradation": "bias", "steps": 3},
        {"task": "restore", "degradation": "blur,bias", "steps": 2},
    ],
    ids=["denoise", "inpaint", "restore-bias", "restore-blur-bias"],
)
def test_each_task_keeps_geometry_and_integer_dtype(
    noisy: Volume, tiny_model_path: Path, kwargs: dict
) -> None:
    if kwargs["task"] == "inpaint":
        kwargs = {**kwargs, "mask": _hole(noisy.shape)}
    result = medidiff.restore(noisy, model=tiny_model_path, progress=False, full_result=True, **kwargs)
    out = result.volume
    assert out.shape == noisy.shape and out.data.dtype == np.int16
    np.testing.assert_array_equal(out.affine, noisy.affine)
    assert not np.array_equal(out.data, noisy.data)
    assert result.info["task"] == kwargs["task"] and result.info["network_evaluations"] >= 1
    assert out.meta["restoration"] is result.info
    if kwargs["task"] == "restore":
        assert set(result.info["parameters"]) == set(kwargs["degradation"].split(","))


def test_task_defaults_stay_within_about_50_evaluations_and_are_applied(
    noisy: Volume, tiny_model_path: Path
) -> None:
    """Issue 5: every task runs at most ~50 network evaluations by default; inpaint averages 4 chains."""
    from medidiff.tasks import TASK_SPECS

    DEFAULTS = {spec.name: spec.defaults for spec in TASK_SPECS.get_all()}
    assert set(DEFAULTS) == {"denoise", "inpaint", "restore", "deblur"}
    assert DEFAULTS["denoise"].samples == 1  # one Tweedie evaluation, averaged over 2 mirrored views
    assert DEFAULTS["denoise"].views == 2
    den = medidiff.restore(noisy, model=tiny_model_path, progress=False, full_result=True)
    assert den.info["views"] == 2 and den.info["network_evaluations"] == 2
    one = medidiff.restore(noisy, model=tiny_model_path, views=1, progress=False, full_result=True)
    assert one.info["network_evaluations"] == 1
    assert not np.array_equal(one.volume.data, den.volume.data)
    for task in ("inpaint", "restore", "deblur"):
        assert DEFAULTS[task].samples * DEFAULTS[task].steps * DEFAULTS[task].views <= 50, task
    result = medidiff.restore(
        noisy, "inpaint", mask=_hole(noisy.shape), model=tiny_model_path, progress=False, full_result=True
    )
    d = DEFAULTS["inpaint"]
    assert result.uncertainty is not None  # the std over the default chains
    assert result.info["network_evaluations"] == d.samples * d.steps
    sde = medidiff.load_model(tiny_model_path).sde
    assert result.info["t_start"] == pytest.approx(float(sde.t_from_noise_ratio(d.start_ratio)))
    bias = medidiff.restore(
        noisy, "restore", degradation="bias", steps=2, model=tiny_model_path, progress=False, full_result=True
    )
    ratio = DEFAULTS["restore"].start_ratio
    assert bias.info["t_start"] == pytest.approx(float(sde.t_from_noise_ratio(ratio)))
    assert bias.info["network_evaluations"] == DEFAULTS["restore"].samples * 2
    assert "consistency" not in bias.info  # a fitted bias field is not checked (tasks/unknown.py)
    blur = medidiff.restore(
        noisy, "restore", degradation="blur", steps=1, model=tiny_model_path, progress=False, full_result=True
    )
    assert set(blur.info["consistency"]) >= {"noise_ratio", "structure", "ok"}  # blur alone is


def test_api_returns_the_input_kind(noisy: Volume, tiny_model_path: Path) -> None:
    """A Volume gives a Volume, an array an array (both int16 here), a loaded model works like its path."""
    from medidiff.nets.checkpoint import load_model

    as_volume = medidiff.restore(noisy, model=tiny_model_path, progress=False)
    as_array = medidiff.restore(noisy.data, model=load_model(tiny_model_path), progress=False)
    assert isinstance(as_volume, Volume)
    assert isinstance(as_array, np.ndarray) and as_array.dtype == np.int16
    # The array has no geometry (identity affine), which only changes the noise estimate's input, not it.
    np.testing.assert_array_equal(as_array, as_volume.data)


# ----------------------------------------------------------------------------- inpainting
@pytest.mark.parametrize("dtype", ["int16", "float64"])
def test_inpainting_leaves_known_voxels_bit_exact(noisy: Volume, tiny_model_path: Path, dtype: str) -> None:
    """Known voxels come back bit for bit in the input's units and dtype (float64 values that float32
    cannot hold included); missing voxels are filled with finite, changed values."""
    data = noisy.data.astype(dtype)
    if dtype == "float64":
        data = data + np.random.default_rng(1).uniform(0, 1, data.shape) * np.pi  # not float32-representable
    volume = Volume(data, noisy.affine, {}, "crop")
    missing = _hole(noisy.shape).astype(bool)
    out = medidiff.restore(volume, "inpaint", mask=missing, steps=3, model=tiny_model_path, progress=False)
    assert out.data.dtype == np.dtype(dtype)
    assert np.array_equal(out.data[~missing], data[~missing])
    assert np.isfinite(out.data).all() and not np.array_equal(out.data[missing], data[missing])


# ----------------------------------------------------------------------------- seeds
def test_same_seed_same_output_and_other_seeds_differ(noisy: Volume, tiny_model_path: Path) -> None:
    """Inpainting and denoising with samples are stochastic: the seed fixes every draw and window offset."""
    mask = _hole(noisy.shape)

    def run(seed: int, **kwargs: object) -> np.ndarray:
        out = medidiff.restore(noisy, model=tiny_model_path, seed=seed, progress=False, **kwargs)
        return np.asarray(out.data)

    for kwargs in (
        {"task": "inpaint", "mask": mask, "steps": 3},
        {"task": "denoise", "samples": 2, "steps": 2},
    ):
        first, again, other = run(1, **kwargs), run(1, **kwargs), run(2, **kwargs)
        assert np.array_equal(first, again), kwargs["task"]
        assert not np.array_equal(first, other), kwargs["task"]


def test_samples_give_a_positive_uncertainty_in_input_units(noisy: Volume, tiny_model_path: Path) -> None:
    result = medidiff.restore(
        noisy, samples=3, steps=2, model=tiny_model_path, progress=False, full_result=True
    )
    std = result.uncertainty
    assert std is not None and std.data.dtype == np.float32 and std.shape == noisy.shape
    np.testing.assert_array_equal(std.affine, noisy.affine)
    assert float(std.data.min()) >= 0 and float(np.median(std.data)) > 0
    assert result.info["samples"] == 3 and result.info["network_evaluations"] == 3 * 2 * 2  # 2 views


# ----------------------------------------------------------------------------- noise level
@pytest.mark.parametrize("noise", ["gaussian", "rician"])
def test_sigma_auto_is_within_ten_percent(brain: Volume, tiny_model_path: Path, noise: str) -> None:
    """A 40^3 crop with air and head, noise sigma 60 (3% of the brain's maximum), int16 like a scanner's.

    The estimate the pipeline used is reported in ``info["sigma"]`` in the input's units (measured: Gaussian
    62.2 (+3.7%) by wavelet MAD, Rician 60.2 (+0.3%) from the Rayleigh air background).
    """
    crop = _crop(brain, (18, 0, 0), (40, 40, 40))
    rng = np.random.default_rng(2)
    clean = crop.data.astype(np.float64)
    if noise == "gaussian":
        data = clean + rng.normal(0.0, 60.0, clean.shape)
    else:
        data = np.hypot(clean + rng.normal(0.0, 60.0, clean.shape), rng.normal(0.0, 60.0, clean.shape))
    volume = Volume(np.rint(data).astype(np.int16), crop.affine, {}, noise)
    result = medidiff.restore(volume, noise=noise, model=tiny_model_path, progress=False, full_result=True)
    assert result.info["sigma"] == pytest.approx(60.0, rel=0.10)
    assert result.info["noise"] == noise


def test_rician_denoising_is_bias_corrected(
    noisy: Volume, tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same sigma, same seed, the prior at the same noise level: the Rician result is the Gaussian one pulled
    down by the inverted Rician mean (never up, and most in the dark voxels, where the Rician floor is)."""
    from medidiff.restoration import noise

    monkeypatch.setattr(noise, "RICIAN_NETWORK_SCALE", 1.0)
    kwargs = {"sigma": 60.0, "model": tiny_model_path, "progress": False}
    gauss = medidiff.restore(noisy, noise="gaussian", **kwargs).data.astype(np.float64)
    rice = medidiff.restore(noisy, noise="rician", **kwargs).data.astype(np.float64)
    assert (rice <= gauss).all()
    dark, bright = gauss < np.percentile(gauss, 20), gauss > np.percentile(gauss, 80)
    assert (gauss - rice)[dark].mean() > 2 * (gauss - rice)[bright].mean() > 0


def test_rician_data_meet_the_prior_below_sigma(noisy: Volume, tiny_model_path: Path) -> None:
    """The prior removes RICIAN_NETWORK_SCALE x sigma from Rician data (their spread is below sigma where the
    signal is weak) and sigma from Gaussian data; the bias correction still reports and uses sigma."""
    from medidiff.restoration.noise import RICIAN_NETWORK_SCALE

    kwargs = {"sigma": 60.0, "model": tiny_model_path, "progress": False, "full_result": True}
    gauss = medidiff.restore(noisy, noise="gaussian", **kwargs).info
    rice = medidiff.restore(noisy, noise="rician", **kwargs).info
    assert 0.5 < RICIAN_NETWORK_SCALE < 1.0
    assert gauss["sigma"] == rice["sigma"] == 60.0
    assert rice["noise_sigma_model"] == pytest.approx(RICIAN_NETWORK_SCALE * gauss["noise_sigma_model"])
    assert rice["t_star"] < gauss["t_star"]


@pytest.mark.parametrize("noise", ["gaussian", "rician"])
def test_denoising_flattens_the_air_and_nothing_else(
    brain: Volume, tiny_model_path: Path, noise: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crop with air and head (magnitude data): with the background step turned off (threshold 0) the
    result differs only where the step's weight is nonzero, and the reported background fraction is that of
    the air."""
    from medidiff.restoration import background as air

    crop = _crop(brain, (18, 0, 0), (40, 40, 40))
    rng = np.random.default_rng(3)
    clean = crop.data.astype(np.float64)
    data = np.hypot(clean + rng.normal(0.0, 60.0, clean.shape), rng.normal(0.0, 60.0, clean.shape))
    volume = Volume(data.astype(np.float32), crop.affine, {}, noise)
    kwargs = {"noise": noise, "sigma": 60.0, "model": tiny_model_path, "progress": False, "full_result": True}
    on = medidiff.restore(volume, **kwargs)
    threshold = air.THRESHOLD
    monkeypatch.setattr(air, "THRESHOLD", 0.0)
    off = medidiff.restore(volume, **kwargs)
    assert off.info["background_fraction"] == 0.0
    weight = air.background_weight(off.volume.data, 60.0, threshold)
    changed = on.volume.data != off.volume.data
    assert changed.any() and not (changed & (weight == 0)).any()
    assert on.info["background_fraction"] == pytest.approx(float((weight > 0.5).mean()))


# ----------------------------------------------------------------------------- thick slices
def test_thick_slices_come_back_on_the_fine_grid(brain: Volume, tiny_model_path: Path) -> None:
    """6 mm slices made from a 2 mm crop (k = 3 along K) are restored at 2 mm: the output has the crop's
    shape and affine, and the mean world position of each slab of 3 fine slices is that thick slice's."""
    crop = _crop(brain, (26, 35, 22), (24, 24, 36))
    profile = SliceProfile(axis=2, factor=3)
    thick_data = profile(torch.from_numpy(crop.data.astype(np.float64))[None, None])[0, 0].numpy()
    thick = Volume(np.rint(thick_data).astype(np.int16), profile.output_affine(crop.affine), {}, "thick")
    assert thick.shape == (24, 24, 12) and thick.spacing[2] == pytest.approx(6.0)
    result = medidiff.restore(
        thick,
        "restore",
        degradation="thick-slices",
        target_spacing=2.0,
        steps=2,
        model=tiny_model_path,
        progress=False,
        full_result=True,
    )
    out = result.volume
    assert out.shape == crop.shape and out.data.dtype == np.int16
    assert out.spacing == pytest.approx((2.0, 2.0, 2.0))
    np.testing.assert_allclose(out.affine, crop.affine, atol=1e-9)
    fine = out.affine @ np.stack([np.zeros(36), np.zeros(36), np.arange(36.0), np.ones(36)])
    coarse = thick.affine @ np.stack([np.zeros(12), np.zeros(12), np.arange(12.0), np.ones(12)])
    np.testing.assert_allclose(fine[:3].reshape(3, 12, 3).mean(axis=2), coarse[:3], atol=1e-9)
    assert result.info["parameters"]["thick-slices"]["factor"] == 3
    # The width comes from the volume's spectra (tests/restoration/test_slice_profile_estimate.py), fixed.
    from medidiff.restoration.slice_profile_estimate import estimate_slice_sigma

    expected = estimate_slice_sigma(thick.data, 2, 3, noise_sigma=result.info["sigma"])
    assert expected is not None and result.info["slice_profile_source"] == "spectral estimate"
    assert result.info["parameters"]["thick-slices"]["sigma"] == pytest.approx(expected, abs=1e-6)
    from medidiff.tasks.unknown import SLICES_START_RATIO

    sde = medidiff.load_model(tiny_model_path).sde
    assert result.info["t_start"] == pytest.approx(float(sde.t_from_noise_ratio(SLICES_START_RATIO)))


def test_thick_slices_need_an_integer_factor(brain: Volume, tiny_model_path: Path) -> None:
    crop = _crop(brain, (26, 35, 22), (24, 24, 36))
    with pytest.raises(InputError, match="integer multiple"):
        # the old spelling "slices" is still accepted
        medidiff.restore(crop, "restore", degradation="slices", target_spacing=1.5, model=tiny_model_path)


# ----------------------------------------------------------------------------- MONAI MetaTensor
@pytest.mark.parametrize("channel", [True, False])
def test_metatensor_in_metatensor_out(noisy: Volume, tiny_model_path: Path, channel: bool) -> None:
    from monai.data import MetaTensor

    data = torch.from_numpy(noisy.data.astype(np.float32))
    image = MetaTensor(data[None] if channel else data, affine=torch.from_numpy(noisy.affine))
    image.meta["filename_or_obj"] = "crop.nii.gz"
    out = medidiff.restore(image, model=tiny_model_path, progress=False)
    assert isinstance(out, MetaTensor) and out.shape == image.shape and out.dtype == torch.float32
    np.testing.assert_array_equal(out.affine.numpy(), noisy.affine)
    assert out.meta["filename_or_obj"] == "crop.nii.gz"
    assert not torch.equal(out.as_tensor(), image.as_tensor())


# ----------------------------------------------------------------------------- bad input
def test_bad_input_is_refused_before_the_model_is_loaded(noisy: Volume, tmp_path: Path) -> None:
    """Every error below is raised although the model path does not exist: the checks come first."""
    absent = tmp_path / "absent.safetensors"
    nan = noisy.data.astype(np.float32)
    nan[3, 4, 5] = np.nan
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"task": "inpaint", "mask": np.ones((5, 5, 5))}, InputError, "shape"),
        ({"task": "inpaint"}, ConfigError, "--mask"),
        ({"task": "inpaint", "mask": np.zeros(noisy.shape)}, InputError, "no voxel"),
        ({"task": "restore"}, ConfigError, "--degradation"),
        ({"task": "restore", "degradation": "bias,warp"}, ConfigError, "--degradation"),
        ({"task": "sharpen"}, ConfigError, "unknown task"),
        ({"task": "denoise", "samples": 0}, ConfigError, "--samples"),
        ({"task": "denoise", "views": 0}, ConfigError, "--views"),
        ({"task": "denoise", "views": 9}, ConfigError, "--views"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            medidiff.restore(noisy, model=absent, **kwargs)
    with pytest.raises(InputError, match="NaN"):
        medidiff.restore(nan, model=absent)
    with pytest.raises(InputError, match="one-channel"):
        from monai.data import MetaTensor

        medidiff.restore(MetaTensor(torch.zeros(2, 8, 8, 8)), model=absent)
