"""Path rules of medidiff I/O: which format a path means, which outputs are safe, atomic writes.

This module imports nothing heavy, so the CLI can reject a bad path before loading torch or MONAI.

Input formats: ``nifti`` (.nii, .nii.gz), ``nrrd`` (.nrrd, .nhdr), ``metaimage`` (.mha, .mhd),
``dicom_file`` (a single, possibly multi-frame, DICOM file) and ``dicom_dir`` (a directory of DICOM files).
Output formats: ``nifti``, ``nrrd`` (.nrrd), ``metaimage`` (.mha) and ``dicom_dir``: a path ending in '/', a
path without a suffix, or an existing directory.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from medidiff.errors import InputError, OutputError

PathLike = str | os.PathLike[str]

NIFTI_SUFFIXES = (".nii.gz", ".nii")
NRRD_SUFFIXES = (".nrrd", ".nhdr")
METAIMAGE_SUFFIXES = (".mha", ".mhd")
SITK_SUFFIXES = NRRD_SUFFIXES + METAIMAGE_SUFFIXES
# Detached-header formats (.nhdr/.mhd + a data file) cannot be renamed into place atomically as one file.
WRITABLE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")
SUPPORTED_INPUTS = ".nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd, a DICOM file or a DICOM series directory"


def image_suffix(path: PathLike) -> str:
    """The lower-case image suffix of ``path`` (``.nii.gz`` counts as one suffix), or ``""``."""
    name = Path(path).name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return Path(name).suffix


def _looks_like_dicom(path: Path) -> bool:
    """True when the file has the DICOM preamble ('DICM' at byte 128) or a .dcm suffix."""
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with path.open("rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def detect_input_format(path: PathLike) -> str:
    """Classify an input path without reading its voxels.

    Args:
        path: a file or directory.

    Returns:
        One of ``nifti``, ``nrrd``, ``metaimage``, ``dicom_file``, ``dicom_dir``.

    Raises:
        InputError: the path is missing, an empty directory, or not an image medidiff reads.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"no such file or directory: {p}")
    if p.is_dir():
        if not any(p.iterdir()):
            raise InputError(f"directory {p} is empty (expected a DICOM series)")
        return "dicom_dir"
    suffix = image_suffix(p)
    if suffix in NIFTI_SUFFIXES:
        return "nifti"
    if suffix in NRRD_SUFFIXES:
        return "nrrd"
    if suffix in METAIMAGE_SUFFIXES:
        return "metaimage"
    if _looks_like_dicom(p):
        return "dicom_file"
    raise InputError(f"{p} is not an image medidiff can read (expected {SUPPORTED_INPUTS})")


def detect_output_format(path: PathLike) -> str:
    """Classify an output path: ``nifti``, ``nrrd``, ``metaimage`` or ``dicom_dir``.

    Raises:
        OutputError: the suffix names a format medidiff does not write.
    """
    text = os.fspath(path)
    p = Path(text)
    if text.endswith(("/", os.sep)) or p.is_dir():
        return "dicom_dir"
    suffix = image_suffix(p)
    if suffix in NIFTI_SUFFIXES:
        return "nifti"
    if suffix == ".nrrd":
        return "nrrd"
    if suffix == ".mha":
        return "metaimage"
    if suffix == "":
        return "dicom_dir"
    if suffix in (".nhdr", ".mhd"):
        raise OutputError(
            f"cannot write {p}: use a single-file format (.nrrd or .mha) so it is written atomically"
        )
    if suffix == ".dcm":
        raise OutputError(f"cannot write {p}: DICOM output is a series directory (a path ending in '/')")
    raise OutputError(
        f"cannot write {p}: unknown suffix {suffix!r} (use .nii.gz, .nii, .nrrd, .mha or a directory)"
    )


def _is_within(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


def _only_dicom_files(directory: Path) -> bool:
    """True when ``directory`` holds nothing but plain DICOM files (safe to replace with a new series)."""
    for entry in directory.iterdir():
        if not entry.is_file() or entry.is_symlink() or not _looks_like_dicom(entry):
            return False
    return True


def check_output_path(
    path: PathLike,
    overwrite: bool = False,
    input_paths: Iterable[PathLike] = (),
) -> str:
    """Refuse an unsafe output before any work is done.

    Args:
        path: the output path.
        overwrite: allow replacing an existing output.
        input_paths: the inputs the output derives from; never overwritten, and an output inside an input
            DICOM directory (or a directory output that contains an input) is refused.

    Returns:
        The output format, as :func:`detect_output_format`.

    Raises:
        OutputError: the output is an input, exists without ``overwrite``, or cannot be replaced safely.
    """
    fmt = detect_output_format(path)
    out = Path(path).expanduser().resolve()
    for raw in input_paths:
        src = Path(raw).expanduser().resolve()
        if out == src:
            raise OutputError(f"output {out} is the input; choose another output path")
        if src.is_dir() and _is_within(out, src):
            raise OutputError(f"output {out} is inside the input DICOM directory {src}; choose another path")
        if fmt == "dicom_dir" and _is_within(src, out):
            raise OutputError(f"output directory {out} contains the input {src}; choose another path")
    if not out.exists() and not out.is_symlink():
        return fmt
    if fmt == "dicom_dir":
        if not out.is_dir():
            raise OutputError(
                f"output {out} exists and is not a directory; cannot write a DICOM series there"
            )
        if not any(out.iterdir()):
            return fmt
        if not overwrite:
            raise OutputError(
                f"output directory {out} exists and is not empty; pass --overwrite to replace it"
            )
        if not _only_dicom_files(out):
            raise OutputError(f"refusing to replace {out}: it holds files or folders that are not DICOM")
        return fmt
    if out.is_dir():
        raise OutputError(f"output {out} is a directory; cannot write a {fmt} file there")
    if not overwrite:
        raise OutputError(f"output {out} exists; pass --overwrite to replace it")
    return fmt


def _temporary_sibling(path: Path, suffix: str = "") -> Path:
    # A hidden name in the same directory: os.replace is atomic only within one file system.
    return path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp{suffix}"


@contextmanager
def atomic_file(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``, else removed.

    The temporary name ends with the same image suffix, so writers that pick a format from the name
    (nibabel, SimpleITK) write the right one.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_sibling(final, image_suffix(final))
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_directory(path: PathLike) -> Iterator[Path]:
    """Yield a temporary directory next to ``path``; on success it replaces ``path`` whole, else is removed.

    An existing ``path`` must already have been approved by :func:`check_output_path` (empty, or only DICOM
    files with overwrite). It is moved aside, the new directory renamed in, and only then deleted.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_sibling(final)
    tmp.mkdir()
    backup: Path | None = None
    try:
        yield tmp
        if final.exists():
            backup = _temporary_sibling(final, ".old")
            os.rename(final, backup)
        try:
            os.rename(tmp, final)
        except OSError:
            if backup is not None:
                os.rename(backup, final)
                backup = None
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
