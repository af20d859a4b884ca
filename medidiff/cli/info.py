"""`medidiff info PATH`: what a scan is (shape, spacing, orientation, dtype, range, modality, series)."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from medidiff.cli.common import add_input_options, read_input

if TYPE_CHECKING:
    from medidiff.io.volume import Volume


def register(subparsers: Any) -> None:
    """Add the ``info`` subcommand."""
    parser = subparsers.add_parser(
        "info",
        help="show shape, spacing, orientation, dtype, intensity range, modality and series of a scan",
        description="Describe a NIfTI/NRRD/MHA file, a DICOM series directory or a multi-frame DICOM file.",
    )
    parser.add_argument("path", metavar="PATH", help="image file or DICOM directory")
    add_input_options(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.set_defaults(handler=run)


def describe(volume: Volume, path: str) -> dict[str, Any]:
    """The facts ``medidiff info`` prints about ``volume`` (read from ``path``), as a JSON-ready dict."""
    import numpy as np

    data = volume.data
    meta = volume.meta
    low, high = (float(data.min()), float(data.max())) if data.size else (0.0, 0.0)
    return {
        "path": str(path),
        "format": meta.get("format", ""),
        "shape": list(volume.shape),
        "spacing": [round(s, 6) for s in volume.spacing],
        "orientation": volume.orientation,
        "dtype": str(data.dtype),
        "min": int(low) if data.dtype.kind in "ui" else low,
        "max": int(high) if data.dtype.kind in "ui" else high,
        "modality": meta.get("modality", ""),
        "series_description": meta.get("series_description", ""),
        "series_uid": meta.get("series_uid", ""),
        "n_series": meta.get("n_series", 1),
        "series": meta.get("series", []),
        "n_volumes": meta.get("n_volumes", 1),
        "volume_index": meta.get("volume_index"),
        "affine": np.round(volume.affine, 6).tolist(),
    }


def _text(facts: dict[str, Any]) -> str:
    def g(value: float) -> str:
        return f"{value:.6g}"

    rows = [
        ("path", facts["path"]),
        ("format", facts["format"]),
        ("shape", " x ".join(str(s) for s in facts["shape"])),
        ("spacing (mm)", " x ".join(g(s) for s in facts["spacing"])),
        ("orientation", facts["orientation"]),
        ("dtype", facts["dtype"]),
        ("intensity range", f"{g(facts['min'])} .. {g(facts['max'])}"),
        ("modality", facts["modality"] or "-"),
        ("series description", facts["series_description"] or "-"),
        ("series found", str(facts["n_series"])),
    ]
    if facts["series_uid"]:
        rows.insert(-1, ("series UID", facts["series_uid"]))
    if facts["n_volumes"] > 1:
        rows.append(("volume", f"{facts['volume_index']} of {facts['n_volumes']}"))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name + ':':<{width + 1}} {value}" for name, value in rows)


def run(args: argparse.Namespace) -> int:
    """Print the description of ``args.path``; errors are MedidiffErrors (one line, exit code 2)."""
    facts = describe(read_input(args, args.path), args.path)
    print(json.dumps(facts, indent=2) if args.json else _text(facts))
    return 0
