"""``restore()``: volume in, volume out. It joins the pieces without knowing which task it runs.

The task (a :class:`medidiff.tasks.base.Task`, looked up in the :mod:`medidiff.tasks` registry) checks its
inputs, prepares the problem in model units, samples and finishes in the input's units; around it, this
module loads the model once (cached), scales intensities to model units
(:class:`medidiff.normalize.Normalizer`), wraps the network in the patch path
(:class:`medidiff.inference.patches.PatchDenoiser`, which also counts the network evaluations) and returns
the result in the input's dtype, geometry and kind.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from medidiff.errors import ConfigError
from medidiff.inference.patches import PatchDenoiser
from medidiff.inference.volumes import as_volume, check_finite, in_input_dtype, like_input
from medidiff.io.volume import Volume
from medidiff.normalize import Normalizer
from medidiff.tasks import TaskOptions, get_spec
from medidiff.tasks.base import Chains, TaskResult
from medidiff.uncertainty import Strata, calibration_for, calibration_key

_MODEL_CACHE: dict[tuple[Any, ...], Any] = {}


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


def get_model(spec: Any, device: torch.device, backend: str = "torch", quiet: bool = True) -> Any:
    """Load a model once per (spec, device, backend); an already loaded ``DiffusionModel`` is used as it is.

    ``backend``: ``torch``, ``openvino`` or ``auto`` (:func:`medidiff.inference.backends.choose_backend`).
    OpenVINO returns an :class:`~medidiff.inference.openvino_backend.OpenVINOModel` (the same ``predict``).
    """
    from medidiff.inference.backends import choose_backend
    from medidiff.nets.checkpoint import load_model
    from medidiff.nets.model import DiffusionModel

    runtime = choose_backend(backend, device.type)
    if isinstance(spec, DiffusionModel):
        model = spec.to(device).eval()
    else:
        key = (str(spec), str(device), "torch")
        if key not in _MODEL_CACHE:
            _MODEL_CACHE[key] = load_model(spec, device=device)
        model = _MODEL_CACHE[key]
    if runtime == "torch":
        return model
    from medidiff.inference.openvino_backend import OpenVINOModel, model_digest

    # A loaded model is named by its weights and config, not id(spec): ids are reused once a model is freed,
    # which handed a freed model's compiled network to a new one. The thread count is part of the key
    # because the compiled network keeps the one it was built with (and bf16 sums differ with it).
    name = str(spec)
    if isinstance(spec, DiffusionModel):
        name = f"{model_digest(model)}:{json.dumps(model.config, sort_keys=True, default=str)}"
    compiled = (name, str(device), runtime, torch.get_num_threads())
    if compiled not in _MODEL_CACHE:
        _MODEL_CACHE[compiled] = OpenVINOModel(model, quiet=quiet)
    return _MODEL_CACHE[compiled]


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
    fwhm: float | None = None,
    steps: int | None = None,
    samples: int | None = None,
    views: int | None = None,
    seed: int = 0,
    device: str = "auto",
    backend: str = "auto",
    window: int | None = None,
    batch_size: int = 2,
    progress: bool | None = None,
    strict: bool = False,
    full_result: bool = False,
) -> Any:
    """Restore a 3D volume with the diffusion prior.

    Args:
        volume: a :class:`Volume`, a MONAI ``MetaTensor`` ((1, I, J, K) or (I, J, K)) or a 3D array.
        task: a name in :data:`medidiff.tasks.TASKS`: ``denoise``, ``inpaint``, ``restore`` or ``deblur``.
        model: ``default`` (the embedded model), a model path, or a loaded ``DiffusionModel``.
        noise, sigma: the noise model and level (``auto``, a number in the input's units, or ``5%``).
        mask: inpainting mask (Volume, array or MetaTensor of the input's shape; nonzero = missing).
        degradation: for ``restore``: any of bias, blur, thick-slices (comma-separated string or list).
        target_spacing: for ``thick-slices``: the output's through-plane spacing (mm; default: in-plane).
        fwhm: for ``deblur``: the Gaussian blur's full width at half maximum, mm.
        steps: network evaluations per chain (default: the task's spec; denoise 25 per sample, 12 otherwise).
        samples: posterior samples (chains) averaged; their std is the uncertainty (default: 1 for denoise,
            4 for the others).
        views: mirrored test-time views averaged at every network evaluation, 1 to 8, each costing one
            evaluation (default: 2 for denoise, 1 otherwise).
        seed: makes the result reproducible.
        device: ``auto``, ``cpu`` or ``cuda``.
        backend: the network's runtime: ``auto`` (OpenVINO on CPUs, torch on GPUs), ``torch`` or ``openvino``.
        window: inference window edge (voxels); default: the training patch.
        batch_size: windows per network call (bounds memory).
        progress: show progress (default: unless quiet).
        strict: raise :class:`~medidiff.errors.ConsistencyError` instead of returning a result that fails
            the consistency check (``info["warnings"]`` holds the reason otherwise).
        full_result: return a :class:`RestoreResult` (volume, uncertainty, info) instead of the volume.

    Returns:
        The restored volume, of the input's kind (Volume, MetaTensor or array), or a RestoreResult.
    """
    from medidiff.progress import Progress

    spec = get_spec(task)
    options = TaskOptions(noise, sigma, mask, degradation, target_spacing, fwhm, steps, samples, views)
    spec.check(options)
    vol, kind = as_volume(volume)
    check_finite(vol, "the input")
    job = spec.load()(options)
    job.check(vol)  # the task's own inputs, before the model is loaded
    start = time.perf_counter()
    dev = resolve_device(device)
    net = get_model(model, dev, backend, quiet=progress is False)
    generator = torch.Generator().manual_seed(int(seed))
    torch.manual_seed(int(seed))
    norm = Normalizer(**net.config.get("normalization", {})).fit(vol.data)
    patch = [int(window)] * 3 if window else list(net.patch_size)
    chains = Chains(steps or spec.defaults.steps, spec.samples(samples), generator)
    name = model if isinstance(model, str) else str(net.config.get("source", type(net).__name__))
    info: dict[str, Any] = {"task": spec.name, "model": name, "seed": seed, "device": str(dev)}
    info["backend"] = f"openvino ({net.precision})" if getattr(net, "backend", "") == "openvino" else "torch"
    info["views"] = spec.views(views)
    with torch.no_grad(), Progress(1, spec.name, quiet=None if progress is None else not progress) as bar:
        problem = job.prepare(vol, norm, dev, patch)
        den = PatchDenoiser(
            net.predict,
            patch,
            batch_size=batch_size,
            generator=generator,
            sde=net.sde,
            foreground=problem.active,
            background=problem.background,
            views=info["views"],
        )
        chains.callback = _step_callback(bar, chains.samples)
        result = job.run(problem, den, net.sde, chains)
    restored, extra = job.finish(problem, result, vol, norm)
    _check_consistency(job.removed(problem, restored, vol, norm), extra, strict)
    # One counter: the patch path's sweeps, one per evaluation and view.
    for part in (problem.info, result.info, extra):
        info.update(part)
    info.update(seconds=time.perf_counter() - start, network_evaluations=den.stats.calls)
    strata = job.calibration_strata() if result.std is not None else None
    out, uncertainty = _output_volumes(vol, restored, result, problem.affine, norm, info, net.config, strata)
    return RestoreResult(out, uncertainty, info) if full_result else like_input(out, kind, volume)


def _check_consistency(removed: Any, info: dict[str, Any], strict: bool) -> None:
    """Record the discrepancy check of what was removed in ``info``; a failure warns, or raises if strict."""
    if removed is None:
        return
    from medidiff.errors import ConsistencyError
    from medidiff.restoration.consistency import check_removed

    check = check_removed(*removed)
    info["consistency"] = check.record()
    if check.problem is not None:
        if strict:
            raise ConsistencyError(f"{check.problem} (--strict: nothing written)")
        info.setdefault("warnings", []).append(check.problem)


def _output_volumes(
    vol: Volume,
    restored: np.ndarray,
    result: TaskResult,
    affine: np.ndarray,
    norm: Normalizer,
    info: dict,
    config: dict[str, Any],
    strata: Strata | None = None,
) -> tuple[Volume, Volume | None]:
    """The restored volume (in the input's dtype) and the uncertainty (float32, input units) as Volumes;
    ``strata``: the task's calibration context (:meth:`medidiff.tasks.base.Task.calibration_strata`)."""
    meta = {**vol.meta, "dtype": str(np.asarray(vol.data).dtype), "restoration": info}
    data = in_input_dtype(restored, np.asarray(vol.data).dtype)
    out = Volume(data, affine, meta, source=f"medidiff {info['task']} of {vol.source}")
    if result.std is None:
        return out, None
    std = result.std[0, 0].cpu().numpy() / norm.scale
    # The chains' spread understates the error: the model's per-task calibration, fitted on development
    # volumes (medidiff.uncertainty); a model or task without one reports the raw spread, marked uncalibrated.
    key = calibration_key(info["task"], info.get("degradation"))
    calibration = calibration_for(config, key)
    if calibration is None:
        info["uncertainty"] = {"key": key, "scale": 1.0, "calibrated": False}
    else:
        described = calibration.to_config()
        info["uncertainty"] = {"key": key, "calibrated": True}
        info["uncertainty"].update(described if isinstance(described, dict) else {"scale": described})
        std = calibration.apply(std, strata)
    std = std.astype(np.float32)
    return out, Volume(std, affine, {**meta, "dtype": "float32"}, source=f"uncertainty of {vol.source}")


def _step_callback(bar: Any, runs: int) -> Any:
    """A sampler callback advancing ``bar``; the total is ``runs`` chains as long as the first one."""

    def callback(ctx: Any) -> None:
        if ctx.index == 0 and ctx.repeat == 0 and bar.total < runs * ctx.total:
            bar.total = runs * ctx.total
            if getattr(bar, "_bar", None) is not None:  # a tqdm bar on a TTY keeps its own total
                bar._bar.total = bar.total
        bar.update()

    return callback
