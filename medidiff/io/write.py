"""``write_volume``: a :class:`Volume` -> NIfTI, NRRD, MetaImage or a derived DICOM series, atomically."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from medidiff.errors import ConfigError, OutputError
from medidiff.io.paths import atomic_directory, atomic_file, check_output_path
from medidiff.io.volume import Volume

OUTPUT_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64")
# NIfTI header fields copied back from the source header, unchanged.
_NIFTI_DESCRIPTIVE = (
    "dim_info",
    "intent_code",
    "intent_p1",
    "intent_p2",
    "intent_p3",
    "intent_name",
    "slice_code",
    "slice_start",
    "slice_end",
    "slice_duration",
    "toffset",
    "xyzt_units",
    "aux_file",
)

PathOrPaths = str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | None


def output_dtype(volume: Volume, dtype: str | np.dtype | None = None) -> np.dtype:
    """The dtype to write: ``dtype`` if given, else the dtype the volume was read with, else its data's.

    Raises:
        ConfigError: ``dtype`` is not one of :data:`OUTPUT_DTYPES`.
    """
    chosen = dtype if dtype is not None else volume.meta.get("dtype") or volume.data.dtype
    try:
        resolved = np.dtype(chosen)
    except TypeError as exc:
        raise ConfigError(f"unknown --dtype {chosen!r} (choose from {', '.join(OUTPUT_DTYPES)})") from exc
    if resolved.name not in OUTPUT_DTYPES:
        raise ConfigError(f"unsupported --dtype {resolved.name} (choose from {', '.join(OUTPUT_DTYPES)})")
    return resolved


def cast_to(data: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``data`` (any shape) in ``dtype``: integers are rounded and clipped to the type's range."""
    if data.dtype == dtype:
        return data
    if dtype.kind in "ui" and data.dtype.kind == "f":
        info = np.iinfo(dtype)
        return np.clip(np.rint(data), info.min, info.max).astype(dtype)
    if dtype.kind in "ui" and data.dtype.kind in "ui":
        info = np.iinfo(dtype)
        return np.clip(data, info.min, info.max).astype(dtype)
    return data.astype(dtype)


def _write_nifti(volume: Volume, data: np.ndarray, path: Path, dtype_given: bool) -> None:
    """NIfTI-1 with the source's qform/sform (matrices and codes) when the geometry is unchanged."""
    import nibabel as nib

    source: dict[str, Any] = volume.meta.get("nifti_header") or {}
    image = nib.Nifti1Image(data, volume.affine)
    header = image.header
    for name in _NIFTI_DESCRIPTIVE:
        value = source.get(name)
        if value is not None:  # text fields were decoded as latin-1 when read
            header[name] = value.encode("latin-1", "replace") if isinstance(value, str) else value
    if not source:
        header.set_xyzt_units("mm", "sec")
    header["descrip"] = str(volume.meta.get("series_description", "") or "")[:79].encode("latin-1", "replace")
    qcode, scode = int(source.get("qform_code", 1)), int(source.get("sform_code", 1))
    stored_affine = None
    if scode > 0 and "sform" in source:
        stored_affine = np.asarray(source["sform"])
    elif qcode > 0 and "qform" in source:
        stored_affine = np.asarray(source["qform"])
    if stored_affine is not None and np.allclose(stored_affine, volume.affine, atol=1e-6):
        # same geometry: store both forms exactly as they were (they may differ, e.g. a sheared sform)
        image.set_qform(np.asarray(source["qform"]), code=qcode)
        image.set_sform(np.asarray(source["sform"]), code=scode)
    else:
        if qcode == 0 and scode == 0:
            qcode = scode = 1
        image.set_qform(volume.affine, code=qcode)
        image.set_sform(volume.affine, code=scode)
    disk = source.get("disk_dtype")
    scaled = source.get("scl_slope") not in (None, 0.0, 1.0) or source.get("scl_inter") not in (None, 0.0)
    if not dtype_given and scaled and disk and np.dtype(disk).kind in "ui" and data.dtype.kind == "f":
        header.set_data_dtype(np.dtype(disk))  # the source stored scaled integers: nibabel rescales again
    else:
        header.set_data_dtype(data.dtype)
    with atomic_file(path) as tmp:
        nib.save(image, str(tmp))


def _write_sitk(volume: Volume, data: np.ndarray, path: Path) -> None:
    """NRRD or MetaImage (by suffix) through SimpleITK; ITK stores the geometry in LPS."""
    import SimpleITK as sitk

    from medidiff.io.geometry import itk_from_affine

    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(data, (2, 1, 0))))
    origin, spacing, direction = itk_from_affine(volume.affine)
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    with atomic_file(path) as tmp:
        try:
            sitk.WriteImage(image, str(tmp), True)
        except RuntimeError as exc:  # SimpleITK reports I/O failures as multi-line RuntimeErrors
            raise OutputError(f"cannot write {path}: {' '.join(str(exc).split())[-200:]}") from exc


def _as_paths(value: PathOrPaths) -> list[str | os.PathLike[str]]:
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [value]
    return list(value)


def write_volume(
    volume: Volume,
    path: str | os.PathLike[str],
    overwrite: bool = False,
    dtype: str | np.dtype | None = None,
    input_path: PathOrPaths = None,
) -> Path:
    """Write ``volume`` to ``path``, choosing the format from the path.

    ``.nii``/``.nii.gz`` -> NIfTI (source qform/sform and codes kept when the geometry is unchanged),
    ``.nrrd``/``.mha`` -> SimpleITK, a path ending in '/', without suffix, or an existing directory -> a
    derived DICOM series (see :mod:`medidiff.io.dicom_writer`). The file (or the series directory) is
    written under a temporary name in the same directory and renamed, so it appears whole or not at all.

    Args:
        volume: data (I, J, K), RAS affine, meta.
        path: output path.
        overwrite: replace an existing output (a DICOM directory only if it holds nothing but DICOM files).
        dtype: output dtype (one of :data:`OUTPUT_DTYPES`); default: ``volume.meta["dtype"]`` (the dtype the
            input was read with), else ``volume.data.dtype``. Integer outputs are rounded and clipped.
        input_path: the input path(s) this output derives from; default ``volume.meta["source_path"]``.
            The output may not be an input, nor lie inside an input DICOM directory.

    Returns:
        The output path.

    Raises:
        OutputError: the output is an input, exists without ``overwrite``, has an unknown suffix, or the
            data holds NaN/Inf.
        ConfigError: unknown ``dtype``.
    """
    inputs = _as_paths(input_path)
    if not inputs and volume.meta.get("source_path"):
        inputs = [volume.meta["source_path"]]
    fmt = check_output_path(path, overwrite=overwrite, input_paths=inputs)
    target = output_dtype(volume, dtype)
    if volume.data.dtype.kind == "f" and not np.all(np.isfinite(volume.data)):
        raise OutputError(f"cannot write {path}: the volume holds NaN/Inf voxels")
    data = cast_to(volume.data, target)
    out = Path(path).expanduser()
    try:
        if fmt == "nifti":
            _write_nifti(volume, data, out, dtype_given=dtype is not None)
        elif fmt in ("nrrd", "metaimage"):
            _write_sitk(volume, data, out)
        else:
            from medidiff.io.dicom_writer import write_dicom_series

            with atomic_directory(out) as tmp:
                write_dicom_series(volume, data, tmp)
    except OSError as exc:
        raise OutputError(f"cannot write {out}: {exc.strerror or exc}") from exc
    return out
