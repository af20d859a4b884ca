"""`medidiff restore-batch INPUTS OUTDIR --task ... [--workers N]`: restore a cohort (contract in DESIGN.md).

INPUTS is a folder (each NIfTI/NRRD/MHA file or DICOM series directory in it is a case) or a manifest CSV
(columns ``input``, optionally ``output`` and ``mask``; ``input`` and ``mask`` are relative to the CSV's
folder, ``output`` to OUTDIR). Existing outputs are skipped, so re-running resumes an interrupted cohort.
Per-case results go to OUTDIR/status.csv. Exit code 0 when every case is ok or skipped, 2 when any failed.
"""

from __future__ import annotations

import argparse
from typing import Any

from medidiff.cli.common import DTYPE_CHOICES, positive_int
from medidiff.cli.restore import add_restore_options

# Same list as medidiff.inference.batch.OUTPUT_FORMATS (literal here so `--help` needs no numpy import).
OUTPUT_FORMATS = ("same", "nii.gz", "nii", "nrrd", "mha", "dicom")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "restore-batch",
        help="restore a cohort (a folder or a manifest CSV), in parallel and resumably",
        description="Restore every case of a cohort with the same options. INPUTS is a folder (each "
        "NIfTI/NRRD/MHA file or DICOM series directory is a case) or a manifest CSV with columns input, "
        "output (optional, relative to OUTDIR) and mask (optional); input and mask paths are relative to "
        "the CSV's folder. Cases whose output exists are skipped, so re-running resumes an interrupted "
        "run. OUTDIR/status.csv lists each case as ok, warning (written; its consistency check failed), "
        "skipped or error. Cases are split across "
        "--workers local processes, and across ranks under `torchrun --nproc_per_node N -m medidiff "
        "restore-batch ...`. Exit code 2 when any case failed.",
    )
    p.add_argument("inputs", metavar="INPUTS", help="folder of volumes, or a manifest .csv")
    p.add_argument("outdir", metavar="OUTDIR", help="output folder (created if missing)")
    add_restore_options(p)
    group = p.add_argument_group("cohort")
    group.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        help="local worker processes (each gets cores/N torch threads); default 1, in this process",
    )
    group.add_argument(
        "--output-format",
        choices=OUTPUT_FORMATS,
        default="same",
        help="format of the outputs named from their inputs (default: the input's; DICOM: a series folder)",
    )
    group.add_argument(
        "--overwrite", action="store_true", help="restore cases whose output exists instead of skipping them"
    )
    group.add_argument(
        "--dtype",
        choices=DTYPE_CHOICES,
        default=None,
        help="output voxel type (default: the input's; integer outputs are rounded and clipped)",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import sys
    import time
    from pathlib import Path

    from medidiff.cli.restore import check_task_options, task_kwargs
    from medidiff.errors import ConfigError
    from medidiff.inference.batch import BatchJob, find_cases, restore_cohort
    from medidiff.progress import Progress

    Progress.set_quiet(args.quiet)
    start = time.perf_counter()
    outdir = Path(args.outdir)
    cases = find_cases(args.inputs, outdir, args.output_format)
    if args.task == "inpaint" and not args.mask:
        lacking = [case.name for case in cases if case.mask is None]
        if lacking:
            raise ConfigError(
                f"--task inpaint needs --mask MASK or a 'mask' column in the manifest ({lacking[0]} has none)"
            )
    # Every case has a mask by now (its own or --mask): check the rest as `medidiff restore` does.
    options = argparse.Namespace(**{**vars(args), "mask": args.mask or "per case"})
    check_task_options(options)
    from medidiff.nets.checkpoint import read_model_config

    read_model_config(args.model)  # a broken model fails once, here, not once per case
    kwargs = task_kwargs(options, mask=options.mask)
    kwargs.pop("mask")
    kwargs["progress"] = False  # one progress line per case, from this process
    job = BatchJob(kwargs, Path(args.mask) if args.mask else None, args.overwrite, args.dtype)
    outdir.mkdir(parents=True, exist_ok=True)
    statuses = restore_cohort(cases, job, outdir, workers=args.workers, progress=not args.quiet)
    if statuses is None:  # a torchrun rank other than 0: rank 0 reports for the whole cohort
        return 0
    counts = {name: sum(s.status == name for s in statuses) for name in ("ok", "warning", "skipped", "error")}
    if not args.quiet:
        warned = f", {counts['warning']} with a warning" if counts["warning"] else ""
        print(
            f"restore-batch: {counts['ok']} ok{warned}, {counts['skipped']} skipped, {counts['error']} "
            f"failed of {len(statuses)} cases in {time.perf_counter() - start:.1f} s; "
            f"status: {outdir / 'status.csv'}"
        )
    if counts["warning"]:
        print(
            f"medidiff: warning: {counts['warning']} of {len(statuses)} results failed their consistency "
            f"check (status 'warning'); see {outdir / 'status.csv'}",
            file=sys.stderr,
        )
    if counts["error"]:
        first = next(s for s in statuses if s.status == "error")
        print(
            f"medidiff: error: {counts['error']} of {len(statuses)} cases failed (first: {first.case}: "
            f"{first.message}); see {outdir / 'status.csv'}",
            file=sys.stderr,
        )
        return 2
    return 0
