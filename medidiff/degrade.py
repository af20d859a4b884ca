"""Reproducible degradation simulator: noise, holes, missing slices, blur, bias, thick slices, k-space.

Two steps, as in TorchIO: :func:`draw_parameters` is the only random part (it draws every parameter from
``seed``), and :func:`apply_degradation` is a deterministic function of the volume and those parameters. The
parameters form a JSON-able *record* (the ``OUTPUT.json`` sidecar of ``medidiff degrade``), so
``apply_degradation(volume, json.load(sidecar))`` reproduces the output bit for bit.

For noise, the realisation itself is the randomness: its parameter is the seed of the generator that draws it
(``noise_seed``), handed to MONAI's ``RandGaussianNoise``/``RandRicianNoise`` with a fixed (not sampled) std.
Blur, bias and thick slices use medidiff's own operators (:mod:`medidiff.restoration.operators`), so the
simulated degradation is exactly the forward model A that ``medidiff restore`` inverts, and the record holds
its ``operator`` spec. See each ``_draw_*`` for why a MONAI transform is or is not used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from medidiff.errors import ConfigError, InputError
from medidiff.io.volume import Volume

KINDS = ("gaussian", "rician", "holes", "slices", "blur", "bias", "thick", "kspace")

# Options each kind accepts, with their defaults (the CLI flags map 1:1 onto these names).
DEFAULTS: dict[str, dict[str, Any]] = {
    "gaussian": {"sigma": "5%"},
    "rician": {"sigma": "5%"},
    "holes": {"holes": 4, "hole_size_mm": 20.0, "fill": 0.0},
    "slices": {"axis": 2, "fraction": 0.25, "fill": 0.0},
    "blur": {"blur_mm": 2.0},
    "bias": {"amplitude": 0.3, "degree": 3},
    "thick": {"axis": 2, "factor": 4, "profile_sigma": None},
    "kspace": {"axis": 1, "center_fraction": 0.08, "acceleration": 4.0},
}


@dataclass
class Degraded:
    """Result of a degradation.

    Attributes:
        volume: the degraded volume (float32 data; thick slices change shape and affine).
        mask: (I, J, K) uint8, 1 = missing voxel, for ``holes`` and ``slices``; else None.
        record: the JSON-able record (sidecar) that reproduces it.
    """

    volume: Volume
    mask: np.ndarray | None
    record: dict[str, Any]


def _version() -> str:
    from medidiff import __version__

    return __version__


def _options(kind: str, options: dict[str, Any]) -> dict[str, Any]:
    if kind not in KINDS:
        raise ConfigError(f"unknown degradation kind {kind!r}; expected one of {', '.join(KINDS)}")
    unknown = sorted(set(options) - set(DEFAULTS[kind]))
    if unknown:
        raise ConfigError(f"--kind {kind} does not take {', '.join(unknown)}")
    merged = dict(DEFAULTS[kind])
    merged.update({key: value for key, value in options.items() if value is not None})
    return merged


def _axis(value: Any) -> int:
    axis = int(value)
    if axis not in (0, 1, 2):
        raise ConfigError(f"--axis must be 0, 1 or 2, got {value}")
    return axis


def _foreground(volume: Volume) -> np.ndarray:
    """Where holes and missing slices are placed: the anatomy, not the air around it."""
    from medidiff.metrics import foreground_mask

    try:
        return foreground_mask(volume.data)
    except InputError:
        return np.ones(volume.shape, dtype=bool)


# --- drawing (the only random part) ------------------------------------------------------------------------


def _draw_noise(volume: Volume, rng: np.random.Generator, opts: dict[str, Any], kind: str) -> dict[str, Any]:
    from medidiff.restoration.noise import resolve_sigma

    if str(opts["sigma"]).strip() == "auto":
        raise ConfigError("--sigma auto estimates noise; degrade needs the level to add (e.g. 5% or 20)")
    sigma = resolve_sigma(opts["sigma"], volume.data, kind)
    return {"sigma": sigma, "sigma_spec": str(opts["sigma"]), "noise_seed": int(rng.integers(2**31 - 1))}


def _draw_holes(volume: Volume, rng: np.random.Generator, opts: dict[str, Any]) -> dict[str, Any]:
    # MONAI's RandCoarseDropout places boxes uniformly over the whole grid (often in the air around a head)
    # and keeps them in private state with no deterministic counterpart that takes boxes; we draw box centres
    # in the foreground with the same box semantics and record the boxes.
    count, size_mm = int(opts["holes"]), float(opts["hole_size_mm"])
    if count < 1 or size_mm <= 0:
        raise ConfigError("--holes must be >= 1 and --hole-size > 0")
    shape = np.array(volume.shape)
    size = np.clip(np.round(size_mm / np.array(volume.spacing)).astype(int), 1, shape)
    centres = np.argwhere(_foreground(volume))
    boxes = []
    for index in rng.choice(len(centres), size=count, replace=len(centres) < count):
        start = np.clip(centres[index] - size // 2, 0, shape - size)
        boxes.append([int(v) for v in (*start, *size)])
    return {"boxes": boxes, "hole_size_mm": size_mm, "fill": float(opts["fill"])}


def _draw_slices(volume: Volume, rng: np.random.Generator, opts: dict[str, Any]) -> dict[str, Any]:
    axis, fraction = _axis(opts["axis"]), float(opts["fraction"])
    if not 0 < fraction < 1:
        raise ConfigError(f"--fraction must be in (0, 1), got {fraction}")
    others = tuple(a for a in range(3) if a != axis)
    candidates = np.flatnonzero(_foreground(volume).any(axis=others))
    count = max(1, round(fraction * len(candidates)))
    chosen = np.sort(rng.choice(candidates, size=count, replace=False))
    return {
        "axis": axis,
        "indices": [int(i) for i in chosen],
        "fraction": fraction,
        "fill": float(opts["fill"]),
    }


def _draw_blur(volume: Volume, opts: dict[str, Any]) -> dict[str, Any]:
    # MONAI's GaussianSmooth uses an erf-integrated kernel and zero padding; we apply medidiff's GaussianBlur
    # so the record's operator is exactly the A that restoration fits.
    from medidiff.restoration.operators import GaussianBlur

    sigma_mm = float(opts["blur_mm"])
    if sigma_mm <= 0:
        raise ConfigError(f"--blur-sigma must be > 0 mm, got {sigma_mm}")
    sigma_voxels = [sigma_mm / s for s in volume.spacing]
    return {"sigma_mm": sigma_mm, "operator": GaussianBlur(sigma_voxels).spec()}


def _draw_bias(volume: Volume, rng: np.random.Generator, opts: dict[str, Any]) -> dict[str, Any]:
    # Same Legendre field as MONAI's RandBiasField (same basis, same coefficient order), but MONAI draws
    # uniform coefficients with no control of the field's amplitude, and its deterministic part is private. We
    # draw smooth random coefficients, then rescale the log-field so that over the anatomy (the foreground) it
    # spans exactly [log(1 - a), log(1 + a)]: the field varies by +-a across the tissue, whatever the margins.
    import torch

    from medidiff.restoration.operators import BiasField, legendre_terms

    amplitude, degree = float(opts["amplitude"]), int(opts["degree"])
    if not 0 < amplitude < 1 or degree < 1:
        raise ConfigError("--amplitude must be in (0, 1) and --degree >= 1")
    terms = legendre_terms(degree)
    raw = np.array([0.0] + [rng.normal() / (1 + sum(t)) for t in terms[1:]])  # low orders dominate: smooth
    log_field = BiasField(degree, torch.tensor(raw, dtype=torch.float64)).log_field(volume.shape).numpy()
    inside = log_field[_foreground(volume)]
    low, high = float(inside.min()), float(inside.max())
    scale = (np.log1p(amplitude) - np.log1p(-amplitude)) / (high - low)
    coefficients = raw * scale
    coefficients[0] = np.log1p(-amplitude) - scale * low
    return {"amplitude": amplitude, "operator": BiasField(degree, coefficients.tolist()).spec()}


def _draw_thick(volume: Volume, opts: dict[str, Any]) -> dict[str, Any]:
    # MONAI's RandSimulateLowResolution zooms down and back up onto the original grid: no new geometry. A
    # thick-slice acquisition is a slice profile plus decimation, written with its own affine.
    from medidiff.restoration.operators import SliceProfile

    axis, factor = _axis(opts["axis"]), int(opts["factor"])
    if factor < 2 or volume.shape[axis] < factor:
        raise ConfigError(f"--factor must be >= 2 and at most the {volume.shape[axis]} slices along the axis")
    profile = opts["profile_sigma"]
    if profile is not None and float(profile) <= 0:
        raise ConfigError(f"--profile-sigma must be > 0 voxels, got {profile}")
    op = SliceProfile(axis, factor, None if profile is None else float(profile))
    return {"operator": op.spec(), "output_spacing": volume.spacing[axis] * factor}


def _draw_kspace(volume: Volume, rng: np.random.Generator, opts: dict[str, Any]) -> dict[str, Any]:
    # The fastMRI/MONAI RandomKspaceMask rule (a centre band plus random lines, acceleration on average),
    # drawn here because MONAI's draws and applies in one call on 2D complex k-space and keeps the mask
    # internal.
    axis = _axis(opts["axis"])
    centre, acceleration = float(opts["center_fraction"]), float(opts["acceleration"])
    n = volume.shape[axis]
    low = round(n * centre)
    if not 0 < centre < 1 or acceleration <= 1 or low >= n / acceleration:
        raise ConfigError("need 0 < --center-fraction < 1/--acceleration and --acceleration > 1")
    keep = rng.uniform(size=n) < (n / acceleration - low) / (n - low)
    start = (n - low + 1) // 2
    keep[start : start + low] = True
    return {
        "axis": axis,
        "center_fraction": centre,
        "acceleration": acceleration,
        "lines": [int(i) for i in np.flatnonzero(keep)],
    }


def draw_parameters(volume: Volume, kind: str, seed: int = 0, **options: Any) -> dict[str, Any]:
    """Draw every random parameter of a degradation: the record (sidecar) :func:`apply_degradation` needs.

    Args:
        volume: the clean volume (I, J, K).
        kind: one of :data:`KINDS`.
        seed: the master seed; everything random derives from it.
        **options: the kind's options (see :data:`DEFAULTS`); None means the default.

    Returns:
        ``{"medidiff_version", "kind", "seed", "input_shape", "input_spacing", "options", "params"}``.
    """
    opts = _options(kind, options)
    rng = np.random.default_rng(int(seed))
    if kind in ("gaussian", "rician"):
        params = _draw_noise(volume, rng, opts, kind)
    elif kind == "holes":
        params = _draw_holes(volume, rng, opts)
    elif kind == "slices":
        params = _draw_slices(volume, rng, opts)
    elif kind == "blur":
        params = _draw_blur(volume, opts)
    elif kind == "bias":
        params = _draw_bias(volume, rng, opts)
    elif kind == "thick":
        params = _draw_thick(volume, opts)
    else:
        params = _draw_kspace(volume, rng, opts)
    record = {
        "medidiff_version": _version(),
        "kind": kind,
        "seed": int(seed),
        "input_shape": list(volume.shape),
        "input_spacing": list(volume.spacing),
        "options": {key: value for key, value in opts.items()},
        "params": params,
    }
    # The JSON round trip guarantees the sidecar file holds exactly what produced the output.
    return dict(json.loads(json.dumps(record, default=_json_scalar)))


def _json_scalar(value: Any) -> Any:
    if isinstance(value, np.generic):  # numpy scalars given as options
        return value.item()
    raise ConfigError(f"option value {value!r} is not a number or a string")


# --- applying (deterministic) ------------------------------------------------------------------------------


def _apply_noise(data: np.ndarray, kind: str, params: dict[str, Any]) -> np.ndarray:
    from monai.transforms import RandGaussianNoise, RandRicianNoise

    sigma = float(params["sigma"])
    transform: RandGaussianNoise | RandRicianNoise
    if kind == "gaussian":
        transform = RandGaussianNoise(prob=1.0, mean=0.0, std=sigma, sample_std=False, dtype=np.float32)
    else:
        transform = RandRicianNoise(prob=1.0, mean=0.0, std=sigma, sample_std=False, dtype=np.float32)
    transform.set_random_state(seed=int(params["noise_seed"]))
    out = transform(data[None].astype(np.float32))
    return np.asarray(out)[0]


def _apply_operator(volume: Volume, spec: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The operator's output (float64 arithmetic) and the output affine (new only for a slice profile)."""
    import torch

    from medidiff.restoration.operators import SliceProfile, operator_from_spec

    op = operator_from_spec(spec).double()
    with torch.no_grad():
        out = op(torch.from_numpy(np.asarray(volume.data, dtype=np.float64))[None, None])
    affine = op.output_affine(volume.affine) if isinstance(op, SliceProfile) else volume.affine
    return out[0, 0].numpy(), affine


def _apply_kspace(data: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    axis = int(params["axis"])
    keep = np.zeros(data.shape[axis], dtype=bool)
    keep[np.asarray(params["lines"], dtype=int)] = True
    # Centred k-space along the axis (MONAI's convention); the mask is constant along the other axes, whose
    # transforms would cancel, so a 1D FFT along the axis is the 3D undersampling exactly.
    spectrum = np.fft.fftshift(np.fft.fft(data.astype(np.float64), axis=axis), axes=axis)
    shape = [1, 1, 1]
    shape[axis] = -1
    spectrum = spectrum * keep.reshape(shape)
    return np.abs(np.fft.ifft(np.fft.ifftshift(spectrum, axes=axis), axis=axis))


def apply_degradation(volume: Volume, record: dict[str, Any]) -> Degraded:
    """Apply a drawn degradation deterministically (same volume + same record -> identical output).

    Args:
        volume: the clean volume (I, J, K) the record was drawn for.
        record: from :func:`draw_parameters` or a sidecar JSON.

    Returns:
        The degraded volume, the missing-voxel mask (holes, slices) and the record.
    """
    try:
        kind, params = record["kind"], record["params"]
        expected = tuple(int(n) for n in record["input_shape"])
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"invalid degradation record: missing {exc}") from None
    if kind not in KINDS:
        raise ConfigError(f"unknown degradation kind {kind!r} in record")
    if expected != volume.shape:
        raise InputError(
            f"the record was drawn for shape {expected}, but the volume has shape {volume.shape}"
        )
    data = np.asarray(volume.data)
    mask = None
    affine = volume.affine
    try:
        if kind in ("gaussian", "rician"):
            out = _apply_noise(data, kind, params)
        elif kind in ("holes", "slices"):
            out = data.astype(np.float32)
            mask = np.zeros(volume.shape, dtype=np.uint8)
            if kind == "holes":
                for i, j, k, si, sj, sk in params["boxes"]:
                    mask[i : i + si, j : j + sj, k : k + sk] = 1
            else:
                np.moveaxis(mask, int(params["axis"]), 0)[np.asarray(params["indices"], dtype=int)] = 1
            out[mask.astype(bool)] = float(params["fill"])
        elif kind in ("blur", "bias", "thick"):
            out, affine = _apply_operator(volume, params["operator"])
        else:
            out = _apply_kspace(data, params)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ConfigError(f"invalid {kind} parameters in the record: {exc}") from None
    description = f"{volume.meta.get('series_description', '') or 'medidiff'} degraded ({kind})"
    degraded = replace(
        volume,
        data=np.asarray(out, dtype=np.float32),
        affine=affine,
        meta={**volume.meta, "dtype": "float32", "series_description": description},
        source=f"{volume.source} degraded ({kind})",
    )
    return Degraded(volume=degraded, mask=mask, record=record)


def degrade(volume: Volume, kind: str, seed: int = 0, **options: Any) -> Degraded:
    """Draw and apply: ``apply_degradation(volume, draw_parameters(volume, kind, seed, **options))``."""
    return apply_degradation(volume, draw_parameters(volume, kind, seed, **options))
