"""`medidiff restore INPUT OUTPUT --task denoise|inpaint|restore ...` (contract in DESIGN.md)."""

from __future__ import annotations

import argparse
from typing import Any

from medidiff.cli.common import add_input_options, add_output_options, positive_int
from medidiff.tasks import DEGRADATIONS, NOISE_MODELS, TASK_SPECS, TASKS

# Same list as medidiff.nets.checkpoint.PICKLE_SUFFIXES, kept literal so that refusing a pickled checkpoint
# needs no torch import (tests/cli/test_restore_cli.py checks the two agree).
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle", ".tar")


def add_restore_options(p: argparse.ArgumentParser) -> None:
    """Task options shared by `restore` and `restore-batch`."""
    p.add_argument(
        "--task",
        required=True,
        choices=TASKS,
        help="what to restore: " + "; ".join(f"{spec.name}: {spec.summary}" for spec in TASK_SPECS.get_all()),
    )
    p.add_argument("--noise", default="gaussian", choices=NOISE_MODELS, help="denoise: noise model")
    p.add_argument(
        "--sigma",
        default="auto",
        help="noise level: auto (estimated), a value in the input's units, or a percentage of the "
        "99.5th percentile such as 5%% (default: auto; with --noise rician prefer auto, read from the air: "
        "a value below the air's noise level leaves the air bright)",
    )
    p.add_argument("--mask", help="inpaint: mask volume of the input's geometry, nonzero = missing voxels")
    p.add_argument(
        "--degradation",
        help=f"restore: comma-separated unknown degradations: {', '.join(DEGRADATIONS)} "
        "('slices', the old spelling of thick-slices, is still accepted)",
    )
    p.add_argument(
        "--target-spacing",
        type=float,
        default=None,
        help="restore with thick-slices: through-plane spacing (mm) of the output (default: in-plane)",
    )
    p.add_argument(
        "--fwhm",
        type=float,
        default=None,
        help="deblur: full width at half maximum (mm) of the known Gaussian blur",
    )
    p.add_argument("--model", default="default", help="default (embedded) or a model .safetensors/.json path")
    p.add_argument(
        "--steps",
        type=positive_int,
        default=None,
        help="network evaluations per chain (default: 12 for inpaint, restore and deblur; denoise: 1 Tweedie "
        "step, 25 per sample with --samples 2+)",
    )
    p.add_argument(
        "--samples",
        type=positive_int,
        default=None,
        help="posterior samples (chains) to average (default: 1 for denoise, 4 for the other tasks)",
    )
    p.add_argument(
        "--views",
        type=positive_int,
        default=None,
        help="mirrored views of the volume averaged at every network evaluation, 1-8, each one more "
        "evaluation (default: 2 for denoise, 1 for the other tasks)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same result)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    add_backend_option(p)
    p.add_argument(
        "--strict",
        action="store_true",
        help="exit with code 2 and write nothing when the result fails its consistency check (what was "
        "removed does not look like the noise assumed); by default it is written with a warning",
    )
    p.add_argument("--quiet", action="store_true", help="no progress output")


def add_backend_option(p: argparse.ArgumentParser) -> None:
    """``--backend``: the network's runtime (shared by restore, restore-batch and sample)."""
    from medidiff.inference.backends import BACKENDS

    p.add_argument(
        "--backend",
        default="auto",
        choices=BACKENDS,
        help="network runtime: auto (OpenVINO on CPUs, bf16 where the CPU has it; torch on GPUs), torch, "
        "or openvino (default: auto)",
    )


def register(sub: Any) -> None:
    p = sub.add_parser(
        "restore",
        help="denoise, inpaint or restore (unknown degradations) one volume",
        description="Restore one 3D volume with the diffusion prior. INPUT and OUTPUT may be "
        "NIfTI, NRRD/MHA files or DICOM directories.",
    )
    p.add_argument("input", metavar="INPUT")
    p.add_argument("output", metavar="OUTPUT")
    add_restore_options(p)
    p.add_argument("--uncertainty", metavar="PATH", help="write the voxel-wise std over --samples (K >= 2)")
    p.add_argument("--params-out", metavar="JSON", help="restore: write the fitted degradation parameters")
    add_input_options(p)
    add_output_options(p)
    p.set_defaults(handler=run)


def task_options(args: argparse.Namespace, mask: Any = None) -> Any:
    """The parsed options as :class:`medidiff.tasks.TaskOptions` (``mask``: the mask, or a stand-in)."""
    from medidiff.tasks import TaskOptions

    return TaskOptions(
        noise=args.noise,
        sigma=args.sigma,
        mask=mask,
        degradation=args.degradation,
        target_spacing=args.target_spacing,
        fwhm=args.fwhm,
        steps=args.steps,
        samples=args.samples,
        views=args.views,
    )


def check_task_options(args: argparse.Namespace) -> None:
    """Refuse option combinations that cannot work, before any file is read (the task's spec decides)."""
    import sys

    from medidiff.tasks import DEGRADATION_KINDS, get_spec

    spec = get_spec(args.task)
    options = task_options(args, mask=args.mask or None)
    spec.check(
        options,
        uncertainty=bool(getattr(args, "uncertainty", None)),
        params_out=bool(getattr(args, "params_out", None)),
    )
    for kind in str(args.degradation or "").split(","):
        note = DEGRADATION_KINDS.alias_note(kind.strip())
        if note and not args.quiet:
            new = DEGRADATION_KINDS.canonical(kind.strip())
            print(f"medidiff: note: --degradation {kind.strip()} is a {note}; use {new}", file=sys.stderr)
    _check_model_path(args.model)
    _check_backend(args.backend, args.device)


def _check_backend(backend: str, device: str) -> None:
    """--backend openvino needs the package and a CPU (checked without importing torch)."""
    from medidiff.inference.backends import choose_backend

    if backend == "openvino":
        choose_backend(backend, "cuda" if device.startswith("cuda") else "cpu")


def _check_model_path(spec: str) -> None:
    """Refuse a missing or pickled model path at once (the loader re-checks everything in detail)."""
    from pathlib import Path

    from medidiff.errors import ModelError

    if spec == "default":
        return
    path = Path(spec)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise ModelError(
            f"{path}: pickled checkpoints are refused because loading them can run arbitrary code; "
            "medidiff models are a .safetensors file with a .json config"
        )
    if not path.exists():
        raise ModelError(f"{path}: no such model file or directory")


def task_kwargs(args: argparse.Namespace, mask: Any) -> dict[str, Any]:
    """Keyword arguments of :func:`medidiff.inference.pipeline.restore` from parsed options."""
    options = task_options(args, mask)
    return {
        "task": args.task,
        "model": args.model,
        **{name: getattr(options, name) for name in options.__dataclass_fields__},
        "seed": args.seed,
        "device": args.device,
        "backend": args.backend,
        "strict": args.strict,
        "progress": not args.quiet,
    }


def report_notes(info: dict[str, Any]) -> None:
    """The result's notes and warnings, one line each on stderr (also under --quiet: not progress)."""
    import sys

    for note in info.get("notes", []):
        print(f"medidiff: note: {note}", file=sys.stderr)
    for warning in info.get("warnings", []):
        print(f"medidiff: warning: {warning}", file=sys.stderr)


def _check_json_output(path: str, overwrite: bool, taken: list[str]) -> None:
    """The --params-out file: not one of the other paths, and not replaced without --overwrite."""
    from pathlib import Path

    from medidiff.errors import OutputError

    out = Path(path).expanduser().resolve()
    if any(out == Path(p).expanduser().resolve() for p in taken):
        raise OutputError(f"--params-out {out} is also an input or output; choose another path")
    if out.is_dir():
        raise OutputError(f"--params-out {out} is a directory")
    if out.exists() and not overwrite:
        raise OutputError(f"output {out} exists; pass --overwrite to replace it")
    if not out.parent.is_dir():
        raise OutputError(f"--params-out {out}: the folder {out.parent} does not exist")


def run(args: argparse.Namespace) -> int:
    import json

    from medidiff.cli.common import check_output, read_input, write_output
    from medidiff.fsutil import atomic_path
    from medidiff.progress import Progress

    Progress.set_quiet(args.quiet)
    check_task_options(args)
    inputs = [args.input] + ([args.mask] if args.mask else [])
    check_output(args, args.output, reference=inputs)
    if args.uncertainty:
        check_output(args, args.uncertainty, reference=[*inputs, args.output])
    if args.params_out:
        others = [*inputs, args.output] + ([args.uncertainty] if args.uncertainty else [])
        _check_json_output(args.params_out, args.overwrite, others)
    from medidiff.inference.pipeline import restore
    from medidiff.io import read_volume

    volume = read_input(args, args.input)
    mask = read_volume(args.mask) if args.mask else None
    result = restore(volume, full_result=True, **task_kwargs(args, mask))
    report_notes(result.info)
    write_output(args, result.volume, args.output, reference=volume)
    if args.uncertainty and result.uncertainty is not None:
        args_float = argparse.Namespace(**{**vars(args), "dtype": "float32"})
        write_output(args_float, result.uncertainty, args.uncertainty, reference=volume)
    if args.params_out:
        with atomic_path(args.params_out) as tmp:
            tmp.write_text(json.dumps(result.info.get("parameters", {}), indent=2) + "\n")
    if not args.quiet:
        info = result.info
        extra = f", sigma {info['sigma']:.4g}" if "sigma" in info else ""
        evals = info.get("network_evaluations", "?")
        noun = "evaluation" if evals == 1 else "evaluations"
        views = f" over {info['views']} views" if info.get("views", 1) > 1 else ""
        print(
            f"restored {args.output} ({info['task']}, {evals} network {noun}{views}, "
            f"{info['seconds']:.1f} s{extra})"
        )
    return 0
