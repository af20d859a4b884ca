"""Finding the DICOM series in a directory (headers only) and choosing one.

MONAI's PydicomReader reads every file of a directory as one series (its ``glob(dir/*)``), so a folder
holding two series, a DICOMDIR or a stray non-DICOM file is silently mixed. medidiff groups the files by
SeriesInstanceUID first and refuses to guess when there is more than one series.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medidiff.errors import InputError

# DICOMDIR (Media Storage Directory Storage) files index a folder; they hold no image.
_MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"


@dataclass
class SeriesEntry:
    """One DICOM series found on disk.

    Attributes:
        uid: SeriesInstanceUID ("" when the files have none).
        description: SeriesDescription ("" when absent).
        modality: Modality ("" when absent).
        number: SeriesNumber, or None.
        files: the image files of the series, in directory order (not slice order).
    """

    uid: str
    description: str = ""
    modality: str = ""
    number: int | None = None
    files: list[Path] = field(default_factory=list)

    def summary(self) -> str:
        """``UID 'description' (N files)``, as listed in errors and ``medidiff info``."""
        return f"{self.uid or '(no UID)'} '{self.description}' ({len(self.files)} files)"

    def as_dict(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "description": self.description,
            "modality": self.modality,
            "number": self.number,
            "files": len(self.files),
        }


def _read_header(path: Path) -> Any | None:
    """The header of a DICOM image file, or None for anything else (non-DICOM, DICOMDIR, no pixels)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError):
        return None
    if str(ds.get("SOPClassUID", "")) == _MEDIA_STORAGE_DIRECTORY or "Rows" not in ds:
        return None
    return ds


def scan_directory(directory: str | os.PathLike[str]) -> list[SeriesEntry]:
    """Group the DICOM image files under ``directory`` (recursively) by SeriesInstanceUID.

    Returns:
        The series, ordered by SeriesNumber then UID.

    Raises:
        InputError: the directory holds no DICOM image file.
    """
    root = Path(directory)
    series: dict[str, SeriesEntry] = {}
    for folder, subfolders, names in os.walk(root):
        subfolders.sort()
        for name in sorted(names):
            path = Path(folder) / name
            ds = _read_header(path)
            if ds is None:
                continue
            uid = str(ds.get("SeriesInstanceUID", ""))
            entry = series.get(uid)
            if entry is None:
                number = ds.get("SeriesNumber")
                entry = SeriesEntry(
                    uid=uid,
                    description=str(ds.get("SeriesDescription", "")).strip(),
                    modality=str(ds.get("Modality", "")).strip(),
                    number=int(number) if number not in (None, "") else None,
                )
                series[uid] = entry
            entry.files.append(path)
    if not series:
        raise InputError(f"directory {root} holds no DICOM image files")
    return sorted(series.values(), key=lambda s: (s.number if s.number is not None else 1 << 31, s.uid))


def select_series(
    found: list[SeriesEntry], uid: str | None, directory: str | os.PathLike[str]
) -> SeriesEntry:
    """Pick the series to read: the only one, or the one whose UID is ``uid``.

    Raises:
        InputError: several series and no ``uid``, or ``uid`` not among them; the message lists them.
    """
    listing = "; ".join(s.summary() for s in found)
    if uid is not None:
        for entry in found:
            if entry.uid == uid:
                return entry
        raise InputError(f"series {uid} is not in {directory}; found: {listing}")
    if len(found) > 1:
        raise InputError(
            f"{directory} holds {len(found)} DICOM series; pick one with --series UID: {listing}"
        )
    return found[0]
