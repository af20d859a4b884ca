"""`medidiff metrics REFERENCE TEST`: PSNR, SSIM and NRMSE of a volume against a reference."""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from medidiff.cli.common import add_input_options, positive_float, read_input


def register(subparsers: Any) -> None:
    """Add the ``metrics`` subcommand."""
    parser = subparsers.add_parser(
        "metrics",
        help="PSNR, SSIM and NRMSE of a volume against a reference",
        description=(
            "Score TEST against REFERENCE (same grid): PSNR (dB), 3D SSIM (Gaussian window, sigma 1.5 "
            "voxels) and NRMSE (||ref - test|| / ||ref||), optionally inside a mask."
        ),
    )
    parser.add_argument(
        "reference", metavar="REFERENCE", help="ground-truth volume (file or DICOM directory)"
    )
    parser.add_argument("test", metavar="TEST", help="volume to score, on the same grid")
    parser.add_argument(
        "--mask",
        metavar="MASK|auto",
        default=None,
        help="score only inside MASK (a volume, nonzero = inside) or 'auto' (the reference's foreground)",
    )
    parser.add_argument(
        "--data-range",
        metavar="X",
        type=positive_float,
        default=None,
        help="intensity range L for PSNR's peak and SSIM's constants (default: reference max - min)",
    )
    parser.add_argument(
        "--ssim-sigma-mm",
        metavar="MM",
        type=positive_float,
        default=None,
        help="SSIM window sigma in mm (anisotropic in voxels) instead of 1.5 voxels",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object (PSNR inf -> null)")
    add_input_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Read the volumes, check they share a grid, print the scores."""
    from medidiff.metrics import check_same_grid, compute_metrics

    reference = read_input(args, args.reference)
    test = read_input(args, args.test)
    check_same_grid(reference, test, ("REFERENCE", "TEST"))
    mask: Any = args.mask
    if mask is not None and mask != "auto":
        mask = read_input(args, args.mask)
        check_same_grid(reference, mask, ("REFERENCE", "MASK"))
    scores = compute_metrics(
        reference, test, mask=mask, data_range=args.data_range, sigma_mm=args.ssim_sigma_mm
    )
    scores = {"reference": str(args.reference), "test": str(args.test), **scores}
    if args.json:
        finite = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in scores.items()}
        print(json.dumps(finite))
        return 0
    print(f"PSNR   {scores['psnr']:.3f} dB")
    print(f"SSIM   {scores['ssim']:.4f}")
    print(f"NRMSE  {scores['nrmse']:.4f}")
    print(f"(data range {scores['data_range']:.6g}; mask: {scores['mask']}; {scores['voxels']} voxels)")
    return 0
