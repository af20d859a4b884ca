"""Argparse helpers shared by the commands that read or write volumes.

Every command that reads a volume calls :func:`add_input_options` (``--series``, ``--volume``) and
:func:`read_input`; every command that writes one calls :func:`add_output_options` (``--overwrite``,
``--dtype``), :func:`check_output` before any heavy work, and :func:`write_output` at the end.
:func:`positive_int`, :func:`non_negative_int` and :func:`positive_float` are the argparse ``type=``
checks of every command. This module imports nothing heavy: the I/O stack is imported inside the functions.
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from medidiff.io.volume import Volume

# Same list as medidiff.io.write.OUTPUT_DTYPES (kept literal here so `--help` needs no numpy import).
DTYPE_CHOICES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64")

PathLike = str | os.PathLike[str]


def _int_at_least(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected {minimum} or more, got {value}")
    return value


def positive_int(text: str) -> int:
    """Argparse type: a whole number, 1 or more."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """Argparse type: a whole number, 0 or more."""
    return _int_at_least(text, 0)


def positive_float(text: str) -> float:
    """Argparse type: a finite number above 0."""
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from exc
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def add_input_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--series UID`` (one series of a DICOM folder) and ``--volume N`` (one volume of a 4D image)."""
    group = parser.add_argument_group("input selection")
    group.add_argument(
        "--series",
        metavar="UID",
        default=None,
        help="SeriesInstanceUID to read when a DICOM directory holds several series",
    )
    group.add_argument(
        "--volume",
        metavar="N",
        type=non_negative_int,
        default=None,
        help="volume to read (0-based) from a 4D image",
    )


def add_output_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--overwrite`` and ``--dtype`` (output dtype; default: the input's)."""
    group = parser.add_argument_group("output")
    group.add_argument("--overwrite", action="store_true", help="replace an existing output")
    group.add_argument(
        "--dtype",
        choices=DTYPE_CHOICES,
        default=None,
        help="output voxel type (default: the input's; integer outputs are rounded and clipped)",
    )


def read_input(args: argparse.Namespace, path: PathLike) -> Volume:
    """Read ``path`` with the ``--series``/``--volume`` choices in ``args`` (absent options mean None)."""
    from medidiff.io import read_volume

    return read_volume(path, series=getattr(args, "series", None), volume_index=getattr(args, "volume", None))


Reference = Any  # a Volume, a path, or an iterable of them


def _items(reference: Reference) -> list[Any]:
    """``reference`` as a list of Volumes and paths."""
    if reference is None:
        return []
    if isinstance(reference, (str, os.PathLike)) or hasattr(reference, "meta"):
        return [reference]
    return list(reference)


def _reference_paths(reference: Reference) -> list[PathLike]:
    paths: list[PathLike] = []
    for item in _items(reference):
        if hasattr(item, "meta"):
            if item.meta.get("source_path"):
                paths.append(item.meta["source_path"])
        else:
            paths.append(item)
    return paths


def check_output(args: argparse.Namespace, path: PathLike, reference: Reference = None) -> None:
    """Refuse an unsafe output (is an input, exists without ``--overwrite``) before the heavy work starts."""
    from medidiff.io.paths import check_output_path

    check_output_path(
        path, overwrite=bool(getattr(args, "overwrite", False)), input_paths=_reference_paths(reference)
    )


def write_output(
    args: argparse.Namespace,
    volume: Volume,
    path: PathLike,
    reference: Reference = None,
) -> Path:
    """Write ``volume`` to ``path`` with ``--overwrite``/``--dtype`` from ``args``.

    Args:
        args: parsed arguments (absent options mean no overwrite and the input's dtype).
        volume: the result, (I, J, K).
        path: output path.
        reference: the input(s) the result derives from: Volumes or paths. They are never overwritten, and
            the first Volume's metadata (DICOM identity, NIfTI codes, dtype) fills what ``volume.meta`` lacks.

    Returns:
        The output path.
    """
    from medidiff.io import write_volume

    inputs = _reference_paths(reference)
    source = next((item for item in _items(reference) if hasattr(item, "meta")), None)
    if source is not None:
        missing = {k: v for k, v in source.meta.items() if k not in volume.meta}
        if missing:
            volume = replace(volume, meta={**missing, **volume.meta})
    if volume.meta.get("source_path"):
        inputs.append(volume.meta["source_path"])
    return write_volume(
        volume,
        path,
        overwrite=bool(getattr(args, "overwrite", False)),
        dtype=getattr(args, "dtype", None),
        input_path=inputs,
    )
