"""Turn a benchmark case into arrays: read the clean volume, cut it down, degrade it reproducibly.

The case's files live in ``OUT/cases/<case id>/``: ``reference.nii.gz`` (the clean volume after
downsampling and cropping), ``degraded.nii.gz`` (what every method receives), ``mask.nii.gz`` (missing
voxels, for holes and slices) and ``case.json`` (the degradation records, which reproduce the degraded
volume exactly with :func:`medidiff.degrade.apply_degradation`, and the true parameters the classical
baselines are given).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from medidiff.benchmark.config import Case
from medidiff.errors import ConfigError
from medidiff.io.volume import Volume

MASK_KINDS = ("holes", "slices")


@dataclass
class CaseData:
    """A prepared case.

    Attributes:
        reference: the clean volume (I, J, K) the outputs are scored against.
        degraded: the measurement every method gets (thick slices: coarser along one axis).
        missing: (I, J, K) bool, True = missing voxel (holes/slices), else None.
        records: one medidiff.degrade record per step.
        truth: the true parameters: ``sigma`` and ``noise`` (noise steps), ``axis`` and ``factor`` (thick).
    """

    reference: Volume
    degraded: Volume
    missing: np.ndarray | None
    records: list[dict[str, Any]]
    truth: dict[str, Any] = field(default_factory=dict)


def block_average(volume: Volume, factor: int) -> Volume:
    """Average ``factor``^3 blocks (trailing voxels that do not fill a block are dropped).

    The affine is updated so that each new voxel sits at the centre of its block.
    """
    if factor <= 1:
        return volume
    n = [s // factor for s in volume.shape]
    data = np.asarray(volume.data, dtype=np.float64)[: n[0] * factor, : n[1] * factor, : n[2] * factor]
    data = data.reshape(n[0], factor, n[1], factor, n[2], factor).mean(axis=(1, 3, 5))
    scale = np.diag([factor, factor, factor, 1.0])
    scale[:3, 3] = (factor - 1) / 2
    return replace(volume, data=data.astype(np.float32), affine=volume.affine @ scale)


def crop_volume(volume: Volume, start: list[int], size: list[int]) -> Volume:
    """The sub-volume ``[start, start + size)`` with its affine moved accordingly."""
    box = tuple(slice(a, a + s) for a, s in zip(start, size, strict=True))
    shift = np.eye(4)
    shift[:3, 3] = start
    return replace(volume, data=np.ascontiguousarray(volume.data[box]), affine=volume.affine @ shift)


def centred_crop(volume: Volume, size: list[int]) -> Volume:
    """Crop ``size`` (clipped to the volume) centred on the centre of the foreground's bounding box."""
    from medidiff.metrics import foreground_mask

    shape = np.array(volume.shape)
    size_arr = np.minimum(np.asarray(size), shape)
    inside = np.argwhere(foreground_mask(volume.data))
    centre = (inside.min(axis=0) + inside.max(axis=0)) // 2 if len(inside) else shape // 2
    start = np.clip(centre - size_arr // 2, 0, shape - size_arr)
    return crop_volume(volume, [int(v) for v in start], [int(v) for v in size_arr])


def load_reference(case: Case) -> Volume:
    """Read the case's clean volume, block-average and crop it as configured (float32 data)."""
    from medidiff.io import read_volume

    spec = case.volume
    volume = read_volume(spec.path, volume_index=spec.index)
    volume = replace(volume, data=np.asarray(volume.data, dtype=np.float32))
    volume = block_average(volume, spec.downsample)
    if spec.crop is not None:
        volume = centred_crop(volume, spec.crop)
    # Thick slices keep n // k slabs: trim the reference so the fine grid matches it exactly.
    for step in case.degradation.steps:
        if step["kind"] == "thick":
            axis, factor = int(step.get("axis", 2)), int(step.get("factor", 4))
            keep = volume.shape[axis] // factor * factor
            if keep != volume.shape[axis]:
                size = list(volume.shape)
                size[axis] = keep
                volume = crop_volume(volume, [0, 0, 0], size)
    return volume


def _step_options(step: dict[str, Any], clean: Volume, current: Volume) -> dict[str, Any]:
    """A step's medidiff.degrade options, with percent sigmas and slice counts made absolute."""
    from medidiff.metrics import foreground_mask
    from medidiff.restoration.noise import resolve_sigma

    options = {k: v for k, v in step.items() if k != "kind"}
    kind = step["kind"]
    if kind in ("gaussian", "rician") and str(options.get("sigma", "5%")).strip().endswith("%"):
        options["sigma"] = resolve_sigma(str(options.get("sigma", "5%")), clean.data, kind)
    if kind == "slices" and "count" in options:
        count = int(options.pop("count"))
        axis = int(options.get("axis", 2))
        others = tuple(a for a in range(3) if a != axis)
        # The same candidate slices medidiff.degrade draws from: those crossing the foreground.
        candidates = int(foreground_mask(current.data).any(axis=others).sum())
        if not 0 < count < candidates:
            raise ConfigError(f"slices count must be in 1..{candidates - 1} for this volume, got {count}")
        options["fraction"] = count / candidates
    return options


def prepare_case(case: Case) -> CaseData:
    """Load, cut and degrade a case (deterministic: the seeds are in the config)."""
    from medidiff.degrade import degrade

    reference = load_reference(case)
    current = reference
    missing: np.ndarray | None = None
    records: list[dict[str, Any]] = []
    truth: dict[str, Any] = {}
    for index, step in enumerate(case.degradation.steps):
        kind = str(step["kind"])
        if kind in MASK_KINDS and current.shape != reference.shape:
            raise ConfigError(f"{case.id}: a {kind} step cannot follow a thick-slice step")
        result = degrade(
            current,
            kind,
            seed=case.degradation.seed + 1000 * index,
            **_step_options(step, reference, current),
        )
        records.append(result.record)
        current = result.volume
        if result.mask is not None:
            missing = result.mask.astype(bool) if missing is None else missing | result.mask.astype(bool)
        params = result.record["params"]
        if kind in ("gaussian", "rician"):
            truth.update(sigma=float(params["sigma"]), noise=kind)
        elif kind == "thick":
            truth.update(axis=int(params["operator"]["axis"]), factor=int(params["operator"]["factor"]))
            truth.update(profile_sigma=float(params["operator"]["sigma"]))
        elif kind == "bias":
            truth.update(bias_amplitude=float(params["amplitude"]))
    return CaseData(reference, current, missing, records, truth)


def _nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.asarray(data), affine), str(path))


def save_case(data: CaseData, folder: Path, digest: str) -> None:
    """Write the case's volumes and ``case.json`` (records, truth, digest) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    _nifti(folder / "reference.nii.gz", data.reference.data.astype(np.float32), data.reference.affine)
    _nifti(folder / "degraded.nii.gz", data.degraded.data.astype(np.float32), data.degraded.affine)
    if data.missing is not None:
        _nifti(folder / "mask.nii.gz", data.missing.astype(np.uint8), data.reference.affine)
    info = {"digest": digest, "truth": data.truth, "records": data.records}
    (folder / "case.json").write_text(json.dumps(info, indent=1) + "\n")


def load_saved_case(folder: Path) -> CaseData:
    """Read back what :func:`save_case` wrote."""
    import nibabel as nib

    def volume(name: str) -> Volume:
        image: Any = nib.load(str(folder / name))
        return Volume(np.asarray(image.dataobj, dtype=np.float32), image.affine, {}, str(folder / name))

    info = json.loads((folder / "case.json").read_text())
    missing = None
    if (folder / "mask.nii.gz").exists():
        mask_image: Any = nib.load(str(folder / "mask.nii.gz"))
        missing = np.asarray(mask_image.dataobj) != 0
    return CaseData(
        volume("reference.nii.gz"), volume("degraded.nii.gz"), missing, info["records"], info["truth"]
    )


def saved_digest(folder: Path) -> str | None:
    """The digest a saved case was prepared with, or None."""
    try:
        return str(json.loads((folder / "case.json").read_text())["digest"])
    except (OSError, ValueError, KeyError):
        return None
