"""`medidiff degrade INPUT OUTPUT --kind ...`: simulate a degradation, reproducibly.

Writes OUTPUT, the sidecar OUTPUT.json (kind, every drawn parameter, seed, medidiff version) and, for holes
and missing slices, the missing-voxel mask. ``--from-sidecar`` replays a sidecar on the same input, bit for
bit.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from medidiff.cli.common import add_input_options, add_output_options, check_output, read_input, write_output

# Same as medidiff.degrade.KINDS, literal here so that `--help` imports no numpy (a test keeps them equal).
KINDS = ("gaussian", "rician", "holes", "slices", "blur", "bias", "thick", "kspace")

# flag -> (option name in medidiff.degrade, type, metavar, help)
_PARAMETERS: dict[str, tuple[str, Any, str, str]] = {
    "--sigma": (
        "sigma",
        str,
        "S",
        "gaussian/rician: noise sigma in the input's units, or N%% of its 99.5th pct (5%%)",
    ),
    "--holes": ("holes", int, "N", "holes: number of boxes (4)"),
    "--hole-size": ("hole_size_mm", float, "MM", "holes: box side in mm (20)"),
    "--fill": ("fill", float, "X", "holes/slices: value written into the missing voxels (0)"),
    "--axis": ("axis", int, "A", "slices/thick/kspace: axis 0, 1 or 2 (slices, thick: 2; kspace: 1)"),
    "--fraction": (
        "fraction",
        float,
        "F",
        "slices: fraction of the slices through the anatomy to drop (0.25)",
    ),
    "--blur-sigma": ("blur_mm", float, "MM", "blur: Gaussian sigma in mm (2)"),
    "--amplitude": ("amplitude", float, "A", "bias: field spans [1 - A, 1 + A] over the anatomy (0.3)"),
    "--degree": ("degree", int, "D", "bias: Legendre polynomial degree of the log-field (3)"),
    "--factor": ("factor", int, "K", "thick: slab thickness in input slices; output spacing x K (4)"),
    "--profile-sigma": (
        "profile_sigma",
        float,
        "VOX",
        "thick: slice-profile sigma in input voxels (FWHM = K)",
    ),
    "--center-fraction": (
        "center_fraction",
        float,
        "F",
        "kspace: fraction of central lines always kept (0.08)",
    ),
    "--acceleration": ("acceleration", float, "R", "kspace: undersampling factor (4)"),
}


def register(subparsers: Any) -> None:
    """Add the ``degrade`` subcommand."""
    parser = subparsers.add_parser(
        "degrade",
        help="simulate noise, holes, missing slices, blur, bias, thick slices or k-space undersampling",
        description=(
            "Degrade INPUT into OUTPUT (float32 unless --dtype) and write OUTPUT.json with every drawn "
            "parameter, so that --from-sidecar reproduces the output exactly."
        ),
    )
    parser.add_argument("input", metavar="INPUT", help="clean volume (file or DICOM directory)")
    parser.add_argument("output", metavar="OUTPUT", help="degraded volume to write")
    parser.add_argument(
        "--kind", choices=KINDS, default=None, help="the degradation (required without sidecar)"
    )
    group = parser.add_argument_group("degradation parameters (defaults in brackets)")
    for flag, (_, kind, metavar, text) in _PARAMETERS.items():
        group.add_argument(flag, type=kind, default=None, metavar=metavar, help=text)
    parser.add_argument(
        "--seed", type=int, default=0, metavar="N", help="seed of every random draw (default 0)"
    )
    parser.add_argument(
        "--mask-out",
        metavar="PATH",
        default=None,
        help="holes/slices: where to write the mask, nonzero = missing (default OUTPUT stem + _mask)",
    )
    parser.add_argument(
        "--from-sidecar",
        metavar="JSON",
        default=None,
        help="replay the parameters of a previous run's sidecar",
    )
    parser.add_argument("--quiet", action="store_true", help="print nothing on success")
    add_input_options(parser)
    add_output_options(parser)
    parser.set_defaults(handler=run)


def sidecar_path(output: str | os.PathLike[str]) -> Path:
    """``OUTPUT.json`` (``out.nii.gz`` -> ``out.nii.gz.json``; a DICOM directory ``out/`` -> ``out.json``)."""
    out = Path(output)
    return out.with_name(out.name + ".json")


def default_mask_path(output: str | os.PathLike[str]) -> Path:
    """OUTPUT stem + ``_mask`` + suffix: ``a.nii.gz`` -> ``a_mask.nii.gz``, DICOM ``a`` -> ``a_mask``."""
    from medidiff.io.paths import WRITABLE_SUFFIXES, image_suffix

    out = Path(output)
    suffix = image_suffix(out)
    if suffix in WRITABLE_SUFFIXES:
        return out.with_name(out.name[: -len(suffix)] + "_mask" + suffix)
    return out.with_name(out.name + "_mask")


def _given_options(args: argparse.Namespace) -> dict[str, tuple[str, Any]]:
    """{option name: (flag, value)} for the parameter flags the user gave."""
    given = {}
    for flag, (name, *_) in _PARAMETERS.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None:
            given[name] = (flag, value)
    return given


def _record(args: argparse.Namespace, volume: Any) -> dict[str, Any]:
    from medidiff.degrade import DEFAULTS, draw_parameters
    from medidiff.errors import ConfigError, InputError

    given = _given_options(args)
    if args.from_sidecar is not None:
        if given:
            flags = ", ".join(flag for flag, _ in given.values())
            raise ConfigError(f"--from-sidecar replays its own parameters; drop {flags}")
        try:
            record = json.loads(Path(args.from_sidecar).read_text())
        except OSError as exc:
            raise InputError(f"cannot read sidecar {args.from_sidecar}: {exc.strerror or exc}") from None
        except json.JSONDecodeError as exc:
            raise InputError(f"sidecar {args.from_sidecar} is not valid JSON: {exc.msg}") from None
        if not isinstance(record, dict) or "kind" not in record:
            raise InputError(f"sidecar {args.from_sidecar} is not a medidiff degrade sidecar")
        if args.kind is not None and args.kind != record["kind"]:
            raise ConfigError(f"--kind {args.kind} contradicts the sidecar's kind {record['kind']}")
        return dict(record)
    if args.kind is None:
        raise ConfigError("give --kind (or --from-sidecar)")
    for name, (flag, _) in given.items():
        if name not in DEFAULTS[args.kind]:
            raise ConfigError(f"--kind {args.kind} does not take {flag}")
    options = {name: value for name, (_, value) in given.items()}
    return draw_parameters(volume, args.kind, args.seed, **options)


def _write_json(path: Path, content: dict[str, Any]) -> None:
    """Write atomically: a temporary sibling renamed into place."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(json.dumps(content, indent=2) + "\n")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def run(args: argparse.Namespace) -> int:
    """Draw (or replay) the parameters, apply them, write output, mask and sidecar."""
    from dataclasses import replace

    from medidiff.degrade import apply_degradation
    from medidiff.errors import OutputError
    from medidiff.io import write_volume

    volume = read_input(args, args.input)
    record = _record(args, volume)
    has_mask = record["kind"] in ("holes", "slices")
    sidecar = sidecar_path(args.output)
    mask_path = Path(args.mask_out) if args.mask_out else default_mask_path(args.output)
    check_output(args, args.output, reference=volume)
    if has_mask:
        check_output(args, mask_path, reference=volume)
    if sidecar.exists() and not args.overwrite:
        raise OutputError(f"{sidecar} exists; use --overwrite to replace it")
    result = apply_degradation(volume, record)
    written = write_output(args, result.volume, args.output, reference=volume)
    sidecar_content = {**record, "input": str(args.input), "output": str(written)}
    if has_mask and result.mask is not None:
        mask_volume = replace(
            volume,
            data=result.mask,
            meta={**volume.meta, "dtype": "uint8", "series_description": "medidiff missing-voxel mask"},
        )
        inputs = [volume.meta["source_path"]] if volume.meta.get("source_path") else None
        write_volume(mask_volume, mask_path, overwrite=args.overwrite, dtype="uint8", input_path=inputs)
        sidecar_content["mask"] = str(mask_path)
    _write_json(sidecar, sidecar_content)
    if not args.quiet:
        extra = f", mask {mask_path}" if has_mask else ""
        print(f"wrote {written} ({record['kind']}, seed {record['seed']}), sidecar {sidecar}{extra}")
    return 0
