"""MONAI PydicomReader for one DICOM series (or one multi-frame file) with correct slice order and geometry.

:class:`SeriesPydicomReader` keeps MONAI's PydicomReader contract (``read`` then ``get_data`` returning an
array and a metadata dict with ``affine`` in RAS, as ``LoadImage`` expects) and its affine formula
(``PydicomReader._get_affine``: row/column cosines, PixelSpacing, first and last ImagePositionPatient, then
LPS -> RAS), but replaces how files become a stack (see :mod:`medidiff.io.dicom_frames` for why):

- a directory is scanned recursively and grouped by series; more than one series is an error unless a UID
  is given (MONAI stacks every file of the folder together);
- slices are sorted by their position along the slice normal, not by InstanceNumber;
- a multi-frame file is read frame by frame with its per-frame geometry;
- integer rescales keep an integer dtype (MONAI always returns float32 once RescaleSlope is present).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import PydicomReader
from monai.utils import ensure_tuple

from medidiff.errors import InputError
from medidiff.io.dicom_frames import (
    Frame,
    frames_from_multiframe,
    frames_from_series,
    order_frames,
    rescaled_dtype,
    stack_frames,
)
from medidiff.io.dicom_series import SeriesEntry, scan_directory, select_series
from medidiff.io.geometry import reader_meta

# Swapping the first two axes turns (Rows, Columns, K) into (I, J, K) with I along a row, ITK's order.
_SWAP_IJ = np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=np.float64)
# Tags left out of the stored header: pixels, padding, and per-frame groups (large, rebuilt on writing).
_DROPPED_TAGS = {"7FE00008", "7FE00009", "7FE00010", "FFFCFFFC", "52009230"}


@dataclass
class DicomStack:
    """What :meth:`SeriesPydicomReader.read` returns: the frames of one series and its context."""

    frames: list[Frame]
    header: Any
    label: str
    series: list[SeriesEntry] = field(default_factory=list)


def header_json(ds: Any) -> dict[str, Any]:
    """The DICOM JSON model of a dataset's header, without pixel data or other bulk binary values."""
    js = ds.to_json_dict(
        bulk_data_threshold=4096, bulk_data_element_handler=lambda _elem: "", suppress_invalid_tags=True
    )
    return {
        tag: value for tag, value in js.items() if tag not in _DROPPED_TAGS and "BulkDataURI" not in value
    }


def _is_multiframe(ds: Any) -> bool:
    return int(ds.get("NumberOfFrames", 1) or 1) > 1


class SeriesPydicomReader(PydicomReader):
    """Read a DICOM series directory or a multi-frame DICOM file as (I, J, K[, T]) with a RAS affine.

    Args:
        series_uid: SeriesInstanceUID to read when a directory holds several series.
        scanned: the result of :func:`~medidiff.io.dicom_series.scan_directory` for the directory about to
            be read, when the caller already has it (saves reading every header twice).
    """

    def __init__(self, series_uid: str | None = None, scanned: list[SeriesEntry] | None = None) -> None:
        super().__init__(affine_lps_to_ras=True, swap_ij=True, prune_metadata=True)
        self.series_uid = series_uid
        self.scanned = scanned

    def read(self, data: Sequence[Any] | Any, **kwargs: Any) -> DicomStack:
        """Scan, select and parse one series (pixels are decoded later, in :meth:`get_data`)."""
        import pydicom

        paths = ensure_tuple(data)
        if len(paths) != 1:
            raise InputError("read one DICOM series or multi-frame file at a time")
        path = Path(paths[0])
        if path.is_dir():
            found = self.scanned if self.scanned is not None else scan_directory(path)
            entry = select_series(found, self.series_uid, path)
            datasets = [pydicom.dcmread(f) for f in entry.files]
            label = f"{path} (series {entry.uid or '(no UID)'})"
            if len(datasets) == 1 and _is_multiframe(datasets[0]):
                frames = frames_from_multiframe(datasets[0], str(entry.files[0]))
            elif any(_is_multiframe(ds) for ds in datasets):
                raise InputError(f"{label} mixes {len(datasets)} files with multi-frame ones; pass one file")
            else:
                frames = frames_from_series(datasets, [str(f) for f in entry.files])
            header = datasets[0]
            return DicomStack(frames=frames, header=header, label=label, series=found)
        ds = pydicom.dcmread(path)
        entry = SeriesEntry(
            uid=str(ds.get("SeriesInstanceUID", "")),
            description=str(ds.get("SeriesDescription", "")).strip(),
            modality=str(ds.get("Modality", "")).strip(),
            files=[path],
        )
        if not _is_multiframe(ds):
            raise InputError(f"{path} is a single 2D DICOM slice; pass its series directory ({path.parent})")
        frames = frames_from_multiframe(ds, str(path))
        return DicomStack(frames=frames, header=ds, label=str(path), series=[entry])

    def get_data(self, img: DicomStack) -> tuple[np.ndarray, dict[str, Any]]:
        """Decode and stack the frames.

        Returns:
            ``(array, meta)``: array (I, J, K) or (I, J, K, T) for a 4D series; meta with MONAI's keys
            (``affine``/``original_affine`` in RAS, ``spatial_shape``, ``original_channel_dim``, ``space``,
            ``spacing``) and medidiff's (``medidiff_dtype``, ``medidiff_series``, ``dicom_headers``).
        """
        volumes = order_frames(img.frames, img.label)
        first, last = volumes[0][0], volumes[0][-1]
        stored = np.asarray(first.load()).dtype
        dtype = rescaled_dtype(img.frames, stored)
        stacks = [stack_frames(volume, dtype) for volume in volumes]
        array = stacks[0] if len(stacks) == 1 else np.stack(stacks, axis=-1)
        geometry = {
            "00200037": {"Value": first.orientation.tolist()},
            "00200032": {"Value": first.position.tolist()},
            "00280030": {"Value": first.pixel_spacing.tolist()},
            "lastImagePositionPatient": last.position.tolist(),
            "spatial_shape": (*first.shape, len(volumes[0])),
        }
        affine = self._get_affine(geometry, lps_to_ras=True) @ _SWAP_IJ
        array = np.ascontiguousarray(np.swapaxes(array, 0, 1))
        header = img.header
        meta: dict[str, Any] = {
            **reader_meta(array, affine),
            "medidiff_format": "dicom",
            "medidiff_series": [s.as_dict() for s in img.series],
            "series_uid": str(header.get("SeriesInstanceUID", "")),
            "series_description": str(header.get("SeriesDescription", "")).strip(),
            "modality": str(header.get("Modality", "")).strip(),
            "dicom_headers": header_json(header),
        }
        return array, meta
