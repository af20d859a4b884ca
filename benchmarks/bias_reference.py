"""How much of the bias-field cases' score is the scan's own field: ``python -m benchmarks.bias_reference``.

The targets benchmark's bias cases (configs/bench/targets.yaml) multiply a clean scan by a synthetic field
and score each method against that clean scan after a global scale fit. Scans that come straight from the
scanner (IXI015, the EPI, ds011 sub-12) keep their own field in that reference, so a method that removes it
too is charged for it. This script scores every saved output of a targets run (``--run``, default
out/bench/targets) against the reference and against N4's correction of the reference (SimpleITK N4, the
same settings as the baseline: :mod:`medidiff.n4`). Neither reference is neutral (N4 is favoured by the
second by construction); the two columns together show how much of a difference between methods is the
native field. ``--output CASE LABEL PATH`` adds another output of a case (e.g. an older model's).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "out" / "bench" / "targets"


def _read(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    image = nib.load(str(path))
    return np.asarray(image.dataobj, np.float64), image.affine


def score_case(folder: Path, extra: dict[str, Path] | None = None) -> list[tuple[str, float, float]]:
    """(label, PSNR fit against the reference, PSNR fit against N4 of the reference) for the degraded input,
    every method's saved output in ``folder`` (a targets run's case folder) and ``extra`` outputs."""
    from medidiff.benchmark.scoring import psnr_scale_fit
    from medidiff.benchmark.worker import OUTPUT_NAME
    from medidiff.metrics import foreground_mask
    from medidiff.n4 import n4_correct

    reference, affine = _read(folder / "reference.nii.gz")
    foreground = foreground_mask(reference)
    peak = float(reference.max() - reference.min())
    corrected = n4_correct(reference, np.linalg.norm(affine[:3, :3], axis=0))  # voxel sizes, any orientation
    outputs = {"degraded input": folder / "degraded.nii.gz"}
    suffix = OUTPUT_NAME.format(method="")
    for path in sorted(folder.glob(f"*{suffix}")):
        if path.name not in ("degraded.nii.gz", "reference.nii.gz") and "uncertainty" not in path.name:
            outputs[path.name.removesuffix(suffix)] = path
    outputs.update(extra or {})
    rows = []
    for label, path in outputs.items():
        output, _ = _read(path)
        rows.append(
            (
                label,
                psnr_scale_fit(reference, output, foreground, peak),
                psnr_scale_fit(corrected, output, foreground, peak),
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=RUN, help="a targets benchmark run's --out folder")
    parser.add_argument(
        "--output",
        nargs=3,
        action="append",
        default=[],
        metavar=("CASE", "LABEL", "PATH"),
        help="another output of a case to score (repeatable)",
    )
    args = parser.parse_args(argv)
    folders = sorted(p for p in (args.run / "cases").glob("*__bias") if (p / "reference.nii.gz").exists())
    if not folders:
        print(f"no bias case in {args.run} (run the targets benchmark first)", file=sys.stderr)
        return 0  # nothing to score is not a failure of `make bench`, which runs the benchmark first
    print("| case | output | PSNR fit vs the reference | vs N4(reference) |")
    print("|---|---|---:|---:|")
    for folder in folders:
        extra = {label: Path(path) for case, label, path in args.output if case == folder.name}
        for label, raw, corrected in score_case(folder, extra):
            print(f"| {folder.name} | {label} | {raw:.2f} | {corrected:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
