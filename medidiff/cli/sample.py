"""`medidiff sample OUTPUT [--shape X Y Z] [--sampler NAME] [--steps N]`: a draw from the prior."""

from __future__ import annotations

import argparse
from typing import Any

from medidiff.cli.restore import add_backend_option

SAMPLER_NAMES = ("ddpm", "ddim", "euler_maruyama", "pc", "heun", "dpmpp2m")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "sample",
        help="draw an unconditional sample volume from a model's prior",
        description="Draw a volume from the diffusion prior (any shape, through the patch path). "
        "Intensities are the model's range mapped to [0, 1]; the voxel size is --spacing.",
    )
    p.add_argument(
        "output", metavar="OUTPUT", help="output volume (.nii.gz, .nrrd, .mha or a DICOM directory)"
    )
    p.add_argument("--shape", type=int, nargs=3, default=(64, 64, 64), metavar=("X", "Y", "Z"))
    p.add_argument("--sampler", default="dpmpp2m", choices=SAMPLER_NAMES)
    p.add_argument("--steps", type=int, default=25, help="denoiser evaluation times (default 25)")
    p.add_argument(
        "--spacing", type=float, default=1.0, help="voxel size in mm written to the output (default 1)"
    )
    p.add_argument("--model", default="default", help="default (embedded) or a model path")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    add_backend_option(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from medidiff.cli.common import check_output, write_output
    from medidiff.errors import ConfigError
    from medidiff.inference.patches import PatchDenoiser
    from medidiff.inference.pipeline import get_model, resolve_device
    from medidiff.io.volume import Volume
    from medidiff.progress import Progress
    from medidiff.samplers import get_sampler

    if min(args.shape) < 1 or args.steps < 1:
        raise ConfigError("--shape values and --steps must be positive")
    check_output(args, args.output)
    Progress.set_quiet(args.quiet)
    device = resolve_device(args.device)
    model = get_model(args.model, device, args.backend, quiet=args.quiet)
    generator = torch.Generator().manual_seed(args.seed)
    denoiser = PatchDenoiser(
        model.predict, list(model.patch_size), overlap=0.25, batch_size=2, generator=generator
    )
    sampler = get_sampler(args.sampler, model.sde, args.steps)
    with torch.no_grad(), Progress(args.steps, "sample") as bar:
        x = sampler.sample(
            denoiser,
            (1, 1, *args.shape),
            generator=generator,
            device=device,
            callback=lambda ctx: bar.update(),
        )
    data = ((x[0, 0].cpu().numpy() + 1.0) / 2.0).astype(np.float32)
    affine = np.diag([args.spacing, args.spacing, args.spacing, 1.0])
    volume = Volume(
        data, affine, {"dtype": "float32"}, source=f"medidiff sample ({args.sampler}, {args.steps})"
    )
    write_output(argparse.Namespace(overwrite=args.overwrite, dtype="float32"), volume, args.output)
    if not args.quiet:
        print(f"sampled {args.output} ({args.sampler}, {args.steps} steps, shape {tuple(args.shape)})")
    return 0
