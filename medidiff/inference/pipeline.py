"""``restore()``: volume in, volume out. Normalisation, the patch path, the task, and back to input units.

The pipeline is the one place that joins the pieces: it loads the model once (cached), scales intensities to
model units (:class:`medidiff.transforms.Normalizer`), wraps the network in the patch path
(:class:`medidiff.inference.patches.PatchDenoiser`), runs the task from :mod:`medidiff.restoration.tasks`,
and maps the result back to the input's units, dtype and geometry.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from medidiff.errors import ConfigError, InputError
from medidiff.inference.defaults import (  # noqa: F401 (re-exported: the pipeline's public names)
    DEFAULTS,
    DEGRADATIONS,
    NOISE_MODELS,
    SLICES_START_RATIO,
    TASKS,
    TaskDefaults,
    resolve_views,
    start_ratio,
)
from medidiff.io.volume import Volume
from medidiff.transforms import Normalizer

_MODEL_CACHE: dict[tuple[str, str], Any] = {}


@dataclass
class RestoreResult:
    """The restored volume, the voxel-wise std over samples (or None), and a record of what was done."""

    volume: Volume
    uncertainty: Volume | None = None
    info: dict[str, Any] = field(default_factory=dict)


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; a clear error for an unavailable device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA device is available")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda, got {device!r}")
    return torch.device(device)


def get_model(spec: Any, device: torch.device) -> Any:
    """Load a model once per (spec, device); an already loaded ``DiffusionModel`` is used as it is."""
    from medidiff.nets.checkpoint import load_model
    from medidiff.nets.model import DiffusionModel

    if isinstance(spec, DiffusionModel):
        return spec.to(device).eval()
    key = (str(spec), str(device))
    if key not in _MODEL_CACHE:
        _MODEL_CACHE[key] = load_model(spec, device=device)
    return _MODEL_CACHE[key]


def _as_volume(data: Any) -> tuple[Volume, str]:
    """Accept a Volume, a MONAI MetaTensor (C=1 or no channel) or a 3D array; returns (volume, kind)."""
    if isinstance(data, Volume):
        return data, "volume"
    try:
        from monai.data import MetaTensor
    except ImportError:  # pragma: no cover - monai is a dependency
        MetaTensor = ()  # type: ignore[misc,assignment]
    if isinstance(data, MetaTensor):
        array = data.detach().cpu().numpy()
        if array.ndim == 4 and array.shape[0] == 1:
            array = array[0]
        if array.ndim != 3:
            raise InputError(
                f"restore needs a one-channel MetaTensor (1, I, J, K) or (I, J, K), got {tuple(data.shape)}"
            )
        affine = np.asarray(data.affine.cpu().numpy() if hasattr(data.affine, "cpu") else data.affine)
        return Volume(array, affine, {}, "MetaTensor"), "metatensor"
    array = np.asarray(data)
    if array.ndim != 3:
        raise InputError(f"restore needs a 3D volume, got an array of shape {array.shape}")
    return Volume(array, np.eye(4), {}, "array"), "array"


def _check_finite(volume: Volume, what: str) -> None:
    if not np.all(np.isfinite(volume.data)):
        raise InputError(f"{what} contains NaN or infinite voxels")


def _foreground(y: torch.Tensor, margin: int) -> torch.Tensor:
    """Voxels clearly above the background after smoothing, dilated by ``margin`` voxels; (1, 1, I, J, K)."""
    from scipy.ndimage import binary_dilation, gaussian_filter

    smooth = gaussian_filter(y[0, 0].cpu().numpy(), 1.5)
    mask = smooth > -0.9
    if margin > 0:
        mask = binary_dilation(mask, iterations=margin)
    return torch.from_numpy(mask)[None, None]


def restore(
    volume: Any,
    task: str = "denoise",
    *,
    model: Any = "default",
    noise: str = "gaussian",
    sigma: str | float = "auto",
    mask: Any = None,
    degradation: str | list[str] | None = None,
    target_spacing: float | None = None,
    steps: int | None = None,
    samples: int | None = None,
    views: int | None = None,
    seed: int = 0,
    device: str = "auto",
    window: int | None = None,
    batch_size: int = 2,
    progress: bool | None = None,
    full_result: bool = False,
) -> Any:
    """Restore a 3D volume with the diffusion prior.

    Args:
        volume: a :class:`Volume`, a MONAI ``MetaTensor`` ((1, I, J, K) or (I, J, K)) or a 3D array.
        task: ``denoise``, ``inpaint`` or ``restore``.
        model: ``default`` (the embedded model), a model path, or a loaded ``DiffusionModel``.
        noise, sigma: denoising noise model and level (``auto``, a number in the input's units, or ``5%``).
        mask: inpainting mask (Volume, array or MetaTensor of the input's shape; nonzero = missing).
        degradation: for ``restore``: any of bias, blur, slices (comma-separated string or list).
        target_spacing: for ``slices``: the through-plane spacing (mm) of the output (default: in-plane).
        steps: network evaluations per chain (default: :data:`DEFAULTS`; denoise 25 per sample, 12 otherwise).
        samples: posterior samples (chains) averaged; their std is the uncertainty (default: 1 for denoise,
            4 for inpaint and restore).
        views: mirrored test-time views averaged at every network evaluation, 1 to 8, each costing one
            evaluation (default: 2 for denoise, 1 otherwise).
        seed: makes the result reproducible.
        device: ``auto``, ``cpu`` or ``cuda``.
        window: inference window edge (voxels); default: the training patch.
        batch_size: windows per network call (bounds memory).
        progress: show progress (default: unless quiet).
        full_result: return a :class:`RestoreResult` (volume, uncertainty, info) instead of the volume.

    Returns:
        The restored volume, of the input's kind (Volume, MetaTensor or array), or a RestoreResult.
    """
    from medidiff.inference.patches import PatchDenoiser
    from medidiff.progress import Progress
    from medidiff.restoration import tasks

    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r} (expected one of {', '.join(TASKS)})")
    if noise not in NOISE_MODELS:
        raise ConfigError(f"unknown noise model {noise!r} (expected gaussian or rician)")
    defaults = DEFAULTS[task]
    samples = defaults.samples if samples is None else samples
    if samples < 1:
        raise ConfigError(f"--samples must be at least 1, got {samples}")
    views = resolve_views(task, views)
    vol, kind = _as_volume(volume)
    _check_finite(vol, "the input")
    # Cheap checks of the task's own inputs come before the model is loaded.
    missing = _mask_array(mask, vol) if task == "inpaint" else None
    kinds = _degradation_kinds(degradation) if task == "restore" else []
    start = time.perf_counter()
    dev = resolve_device(device)
    net = get_model(model, dev)
    net.network_evaluations = 0
    generator = torch.Generator().manual_seed(int(seed))
    torch.manual_seed(int(seed))
    norm = Normalizer(**net.config.get("normalization", {})).fit(vol.data)
    y = torch.from_numpy(norm.forward(vol.data))[None, None].to(dev)
    patch = [int(window)] * 3 if window else list(net.patch_size)
    n_steps = int(steps) if steps else defaults.steps

    def patch_denoiser(foreground: torch.Tensor | None, background: float = -1.0) -> PatchDenoiser:
        return PatchDenoiser(
            net.predict,
            patch,
            overlap=0.25,
            batch_size=batch_size,
            generator=generator,
            sde=net.sde,
            foreground=foreground,
            background=background,
            views=views,
        )

    model_name = model if isinstance(model, str) else str(net.config.get("source", type(net).__name__))
    info: dict[str, Any] = {
        "task": task,
        "model": model_name,
        "seed": seed,
        "device": str(dev),
        "views": views,
    }
    out_affine = vol.affine
    runs = samples
    with torch.no_grad(), Progress(1, task, quiet=None if progress is None else not progress) as bar:
        callback = _step_callback(bar, runs)
        if task == "denoise":
            from medidiff.restoration.noise import network_noise_level, resolve_sigma

            sigma_units = resolve_sigma(sigma, np.asarray(vol.data, dtype=np.float32), noise)
            fg = _foreground(y, margin=4).to(y.device)
            background = float(y[~fg].median()) if bool((~fg).any()) else -1.0
            den = patch_denoiser(fg, background)
            result = tasks.denoise(
                y,
                den,
                net.sde,
                norm.sigma_to_model(network_noise_level(sigma_units, noise)),
                samples=samples,
                steps=n_steps,
                generator=generator,
                callback=callback,
            )
            info.update(sigma=sigma_units, noise=noise)
        elif task == "inpaint":
            assert missing is not None
            known = torch.from_numpy(~missing)[None, None].to(dev)
            from scipy.ndimage import binary_dilation

            active = torch.from_numpy(binary_dilation(missing, iterations=max(patch) // 4))[None, None]
            den = patch_denoiser(active)
            result = tasks.inpaint(
                y,
                known,
                den,
                net.sde,
                steps=n_steps,
                samples=samples,
                generator=generator,
                callback=callback,
                start_ratio=start_ratio("inpaint"),
            )
            info.update(missing_voxels=int(missing.sum()))
        else:
            result, out_affine = _restore_unknown(
                vol,
                y,
                norm,
                kinds,
                target_spacing,
                sigma,
                noise,
                patch_denoiser,
                net,
                n_steps,
                samples,
                generator,
                callback,
            )
    # Back to input units in float64, so that known voxels are copied exactly and integer inputs round once.
    restored = norm.invert(result.x0[0, 0].cpu().numpy(), np.float64)
    if task == "denoise" and noise == "rician":
        from medidiff.restoration.noise import rician_correct_estimate

        restored = rician_correct_estimate(restored, info["sigma"])
    if task == "denoise":
        from medidiff.restoration import background as air

        # The module's constants are read here, not bound as defaults, so that THRESHOLD = 0 turns it off.
        restored, info["background_fraction"] = air.flatten_background(
            restored,
            np.asarray(vol.data, dtype=np.float64),
            info["sigma"],
            noise,
            threshold=air.THRESHOLD,
            width=air.AVERAGING_VOXELS,
        )
    if missing is not None:
        restored = np.where(missing, restored, np.asarray(vol.data, dtype=np.float64))
    restored = _in_input_dtype(restored, np.asarray(vol.data).dtype)
    info.update(result.info, seconds=time.perf_counter() - start, network_calls=net.network_evaluations)
    # The task counts evaluations of its denoiser; each is one sweep of the network per view.
    info["network_evaluations"] = int(info.get("network_evaluations", 0)) * views
    meta = {**vol.meta, "dtype": str(np.asarray(vol.data).dtype), "restoration": info}
    out = Volume(restored, out_affine, meta, source=f"medidiff {task} of {vol.source}")
    uncertainty = None
    if result.std is not None:
        std = (result.std[0, 0].cpu().numpy() / norm.scale).astype(np.float32)
        uncertainty = Volume(
            std, out_affine, {**meta, "dtype": "float32"}, source=f"uncertainty of {vol.source}"
        )
    if full_result:
        return RestoreResult(out, uncertainty, info)
    return _like_input(out, kind, volume)


def _in_input_dtype(data: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Integer inputs come back rounded and clipped to their type, float64 stays float64, else float32."""
    from medidiff.io.write import cast_to

    if dtype.kind in "ui":
        return cast_to(data, dtype)
    return data.astype(np.float64 if dtype == np.float64 else np.float32)


def _like_input(out: Volume, kind: str, original: Any) -> Any:
    """The result in the input's form; a MetaTensor keeps its metadata, channel layout and (new) affine."""
    if kind == "volume":
        return out
    if kind == "metatensor":
        from monai.data import MetaTensor

        data = torch.from_numpy(np.ascontiguousarray(out.data))
        if original.ndim == 4:
            data = data[None]
        meta = dict(original.meta)
        meta.pop("affine", None)
        meta["spatial_shape"] = np.asarray(out.shape)
        return MetaTensor(
            data,
            affine=torch.as_tensor(out.affine, dtype=torch.float64),
            meta=meta,
            applied_operations=list(original.applied_operations),
        )
    return out.data


def _step_callback(bar: Any, runs: int) -> Any:
    """A sampler callback advancing ``bar``; the total is ``runs`` chains as long as the first one."""

    def callback(ctx: Any) -> None:
        if ctx.index == 0 and ctx.repeat == 0 and bar.total < runs * ctx.total:
            bar.total = runs * ctx.total
            if getattr(bar, "_bar", None) is not None:  # a tqdm bar on a TTY keeps its own total
                bar._bar.total = bar.total
        bar.update()

    return callback


def _degradation_kinds(degradation: str | list[str] | None) -> list[str]:
    """``"bias,blur"`` or ``["bias", "blur"]`` -> the checked list of degradation kinds."""
    parts = degradation.split(",") if isinstance(degradation, str) else list(degradation or [])
    kinds = [k.strip() for k in parts if k.strip()]
    unknown = sorted(set(kinds) - set(DEGRADATIONS))
    if not kinds or unknown:
        raise ConfigError(f"--degradation must list some of {', '.join(DEGRADATIONS)}, got {degradation!r}")
    return kinds


def _mask_array(mask: Any, vol: Volume) -> np.ndarray:
    """The inpainting mask as a bool (I, J, K) array (True = missing), checked against the input."""
    if mask is None:
        raise ConfigError("--task inpaint needs --mask (nonzero = missing voxels)")
    mask_vol, _ = _as_volume(mask)
    if mask_vol.shape != vol.shape:
        raise InputError(f"the mask has shape {mask_vol.shape} but the input has shape {vol.shape}")
    if isinstance(mask, Volume) and not np.allclose(mask_vol.affine, vol.affine, atol=1e-3):
        raise InputError("the mask's geometry (affine) differs from the input's")
    missing = np.asarray(mask_vol.data) != 0
    if not missing.any():
        raise InputError("the mask marks no voxel as missing (nonzero = missing)")
    if missing.all():
        raise InputError("the mask marks every voxel as missing; nothing is known to inpaint from")
    return missing


def _restore_unknown(
    vol: Volume,
    y: torch.Tensor,
    norm: Normalizer,
    kinds: list[str],
    target_spacing: Any,
    sigma: Any,
    noise: str,
    patch_denoiser: Any,
    net: Any,
    steps: int,
    samples: int,
    generator: torch.Generator,
    callback: Any,
) -> tuple[Any, np.ndarray]:
    from medidiff.restoration import tasks
    from medidiff.restoration.noise import estimate_sigma_gaussian, resolve_sigma

    data = np.asarray(vol.data, dtype=np.float32)
    sigma_units = estimate_sigma_gaussian(data) if str(sigma) == "auto" else resolve_sigma(sigma, data, noise)
    # Bias fields multiply intensities, which are 0 in air; in model units air sits at norm.forward(0).
    air_offset = -float(norm.forward(np.zeros(1, np.float32))[0])
    axis, factor, out_affine, init, slice_sigma = None, 1, vol.affine, y, None
    if "slices" in kinds:
        from medidiff.restoration.slice_profile_estimate import estimate_slice_sigma

        axis, factor, out_affine = _fine_grid(vol, target_spacing)
        init = _interpolate_axis(y, axis, factor)
        # The profile width comes from the volume's own spectra; GDP fits it only when they say nothing
        # (too few slices or no foreground), because its own fit is biased (tasks.build_degradation).
        slice_sigma = estimate_slice_sigma(data, axis, factor, noise_sigma=sigma_units)
    model = tasks.build_degradation(
        kinds, air_offset=air_offset, slice_axis=axis, factor=factor, slice_sigma=slice_sigma
    )
    fg = _foreground(init, margin=4)
    result = tasks.restore_unknown(
        y,
        init,
        model,
        patch_denoiser(fg),
        net.sde,
        norm.sigma_to_model(sigma_units),
        steps=steps,
        samples=samples,
        generator=generator,
        callback=callback,
        start_ratio=start_ratio("restore", kinds),
    )
    result.info.update(degradation=kinds, sigma=sigma_units)
    if "slices" in kinds:
        result.info["slice_profile_source"] = "GDP fit" if slice_sigma is None else "spectral estimate"
    return result, out_affine


def _fine_grid(vol: Volume, target_spacing: float | None) -> tuple[int, int, np.ndarray]:
    """Thick-slice geometry: (axis, factor k, affine of the fine grid) for the coarsest axis."""
    spacing = np.asarray(vol.spacing)
    axis = int(np.argmax(spacing))
    inplane = float(np.min(np.delete(spacing, axis)))
    target = float(target_spacing) if target_spacing else inplane
    factor = round(float(spacing[axis]) / target)
    if factor < 2 or not math.isclose(spacing[axis] / factor, target, rel_tol=0.05):
        raise InputError(
            f"thick-slice restoration needs the slice spacing ({spacing[axis]:.3g} mm) to be an integer "
            f"multiple (>= 2) of the target spacing ({target:.3g} mm)"
        )
    affine = np.array(vol.affine, dtype=np.float64)
    column = affine[:3, axis] / factor
    affine[:3, axis] = column
    affine[:3, 3] -= column * (factor - 1) / 2  # the thick slice's centre is the middle of its k fine slices
    return axis, factor, affine


def _interpolate_axis(y: torch.Tensor, axis: int, factor: int) -> torch.Tensor:
    """Cubic interpolation of (1, 1, I, J, K) onto a grid ``factor`` times finer along ``axis``."""
    from scipy.ndimage import map_coordinates

    data = y[0, 0].cpu().numpy()
    n = data.shape[axis] * factor
    fine = (np.arange(n) - (factor - 1) / 2) / factor  # fine-slice centres in coarse-index units
    grids = [np.arange(s, dtype=np.float64) for s in data.shape]
    grids[axis] = fine
    coords = np.meshgrid(*grids, indexing="ij")
    out = map_coordinates(data, coords, order=3, mode="nearest")
    return torch.from_numpy(out.astype(np.float32))[None, None].to(y.device)
