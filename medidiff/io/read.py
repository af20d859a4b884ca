"""``read_volume``: any supported file or DICOM directory -> one :class:`~medidiff.io.volume.Volume`.

Input rules (also in data_samples/README.md, "What medidiff accepts"):

- the data must be 3D; a 2D image (any axis of size 1) is an error, and so is a 4D image unless
  ``volume_index`` picks one volume;
- NaN or Inf voxels are an error: medidiff does not guess a replacement value, since any choice (0, the
  minimum, interpolation) changes the scan silently;
- a directory with several DICOM series is an error listing them, unless ``series`` picks one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from medidiff.errors import ConfigError, InputError, MedidiffError
from medidiff.io.paths import detect_input_format
from medidiff.io.volume import Volume

_FORMAT_NAMES = {
    "nifti": "nifti",
    "nrrd": "nrrd",
    "metaimage": "metaimage",
    "dicom_dir": "dicom",
    "dicom_file": "dicom",
}


def _load_image(reader: Any) -> Any:
    """A MONAI ``LoadImage`` that knows only ``reader``.

    ``LoadImage.__init__`` always instantiates MONAI's whole default reader list first (so a failed read
    would fall back to unrelated readers, and ``NvImgCodecPydicomReader`` logs "nvImageCodec is not
    available" on stderr just by being built). The registration order is read from a module function,
    which is emptied while this loader is constructed.
    """
    import monai.transforms.io.array as load_module
    from monai.transforms import LoadImage

    original = getattr(load_module, "get_default_reader_registration_order", None)
    if original is not None:
        load_module.get_default_reader_registration_order = lambda: []
    try:
        loader = LoadImage(reader=reader, image_only=False, dtype=None)
    finally:
        if original is not None:
            load_module.get_default_reader_registration_order = original
    loader.readers = [reader]
    return loader


def _make_reader(fmt: str, path: Path, series: str | None) -> Any:
    if fmt == "nifti":
        from medidiff.io.nifti_reader import HeaderNibabelReader

        return HeaderNibabelReader()
    if fmt in ("nrrd", "metaimage"):
        from medidiff.io.sitk_reader import SimpleITKReader

        return SimpleITKReader()
    if fmt == "dicom_dir":
        # Choose the series before MONAI (and torch) are imported: a directory holding several series
        # is refused in a fraction of a second.
        from medidiff.io.dicom_series import scan_directory, select_series

        scanned = scan_directory(path)
        select_series(scanned, series, path)
    else:
        scanned = None
    from medidiff.io.dicom_reader import SeriesPydicomReader

    return SeriesPydicomReader(series_uid=series, scanned=scanned)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _select_volume(data: np.ndarray, volume_index: int | None, label: str) -> tuple[np.ndarray, int]:
    """Reduce (I, J, K, ...) to (I, J, K); returns the data and the number of volumes found."""
    if data.ndim < 3 or min(data.shape[:3]) < 2:
        shape = " x ".join(str(s) for s in data.shape)
        raise InputError(f"{label} is a 2D image ({shape}); medidiff needs a 3D volume")
    stacked = data.reshape((*data.shape[:3], -1))
    n_volumes = stacked.shape[3]
    if n_volumes == 1:
        if volume_index not in (None, 0):
            raise InputError(f"{label} holds one volume; --volume {volume_index} is out of range")
        return stacked[..., 0], 1
    if volume_index is None:
        raise InputError(
            f"{label} is 4D with {n_volumes} volumes; pick one with --volume N (0 to {n_volumes - 1})"
        )
    if not 0 <= volume_index < n_volumes:
        raise InputError(f"{label} has volumes 0 to {n_volumes - 1}; --volume {volume_index} is out of range")
    return np.ascontiguousarray(stacked[..., volume_index]), n_volumes


def _check_finite(data: np.ndarray, label: str) -> None:
    if data.dtype.kind not in "fc":
        return
    bad = int(np.count_nonzero(~np.isfinite(data)))
    if bad:
        raise InputError(
            f"{label} has {bad} NaN/Inf voxels; medidiff needs finite values (replace them, e.g. with 0)"
        )


def read_volume(
    path: str | os.PathLike[str], series: str | None = None, volume_index: int | None = None
) -> Volume:
    """Read a NIfTI, NRRD/MetaImage, DICOM series directory or multi-frame DICOM file.

    Reading goes through MONAI ``LoadImage`` with one explicit reader per format: ``NibabelReader``
    (NIfTI), :class:`~medidiff.io.dicom_reader.SeriesPydicomReader` (a ``PydicomReader`` that sorts slices by
    position and reads one series) and :class:`~medidiff.io.sitk_reader.SimpleITKReader` (NRRD/MHA).

    Args:
        path: the file or DICOM directory.
        series: SeriesInstanceUID to read when a directory holds several series.
        volume_index: which volume (0-based) of a 4D image to read; required for 4D inputs.

    Returns:
        A Volume: data (I, J, K) in the dtype stored (rescaled DICOM: integer when the rescale is integral,
        else float32), affine (4, 4) voxel -> RAS mm, and meta with ``format``, ``dtype``, ``source_path``,
        ``modality``, ``series_description``, ``series_uid``, ``series`` (the series found, for DICOM),
        ``n_series``, ``n_volumes``, ``volume_index``, and ``dicom_headers`` (DICOM JSON model of a source
        slice), ``nifti_header`` (fields, codes, qform/sform) or ``sitk_metadata``, per format.

    Raises:
        InputError: missing or empty path, unreadable or corrupt file, not an image, several DICOM series
            without ``series``, 2D data, 4D data without ``volume_index``, or NaN/Inf voxels.
        ConfigError: ``series`` given for a non-DICOM input, or a negative ``volume_index``.
    """
    p = Path(path).expanduser()
    fmt = detect_input_format(p)
    if volume_index is not None and volume_index < 0:
        raise ConfigError(f"--volume must be 0 or more, got {volume_index}")
    if series is not None and fmt != "dicom_dir":
        raise ConfigError(f"--series applies to DICOM directories; {p} is not one")
    reader = _make_reader(fmt, p, series)
    try:
        image, raw_meta = _load_image(reader)(str(p), reader=reader)
    except MedidiffError:
        raise
    except Exception as exc:  # every library failure on a bad file becomes one clear line
        raise InputError(f"cannot read {p}: {_one_line(exc)}") from exc
    data = np.asarray(image.array)
    dtype = np.dtype(raw_meta.get("medidiff_dtype", data.dtype))
    if data.dtype != dtype:  # torch has no uint16/uint32: LoadImage widened it, losslessly
        data = data.astype(dtype)
    label = str(p)
    data, n_volumes = _select_volume(data, volume_index, label)
    _check_finite(data, label)
    series_found = raw_meta.get("medidiff_series", [])
    meta: dict[str, Any] = {
        "format": raw_meta.get("medidiff_format", _FORMAT_NAMES[fmt]),
        "dtype": str(data.dtype),
        "source_path": str(p.resolve()),
        "modality": raw_meta.get("modality", ""),
        "series_description": raw_meta.get("series_description", ""),
        "series_uid": raw_meta.get("series_uid", ""),
        "series": series_found,
        "n_series": max(len(series_found), 1),
        "n_volumes": n_volumes,
        "volume_index": volume_index if n_volumes > 1 else None,
    }
    for key in ("dicom_headers", "nifti_header", "sitk_metadata"):
        if key in raw_meta:
            meta[key] = raw_meta[key]
    if fmt in ("nrrd", "metaimage"):
        meta["format"] = fmt
    if fmt == "nifti":
        meta["series_description"] = str(meta["nifti_header"].get("descrip", "") or "").strip()
    source = f"{p}" + (f" (series {meta['series_uid']})" if fmt == "dicom_dir" else "")
    # "original_affine" is the file's own (numpy); MONAI's "affine" is the one later transforms update.
    affine = np.asarray(raw_meta["original_affine"], dtype=np.float64)
    return Volume(data=data, affine=affine, meta=meta, source=source)
