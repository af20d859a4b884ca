"""Cohort throughput of `medidiff restore-batch` (volumes per minute) with 1 vs N local worker processes.

Writes small crops of the bundled 2 mm MNI152 T1 as a cohort, times the real command (process start-up and
model loading included, as a user would see them) for each worker count, prints a Markdown table and
writes it into the ``cohort-throughput`` section of docs/benchmarks.md (other sections are left alone)::

    .venv/bin/python benchmarks/cohort_throughput.py                  # the embedded default model
    .venv/bin/python benchmarks/cohort_throughput.py --architecture configs/models/small.yaml

With ``--architecture`` (or when the default model is missing) an untrained model of that architecture is
used: throughput depends on the architecture, not on the weights.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data_samples" / "mni152_t1_2mm.nii.gz"
DOC = ROOT / "docs" / "benchmarks.md"


def write_cohort(folder: Path, count: int, size: int) -> list[Path]:
    """``count`` different size^3 crops of the sample (int16 NIfTI, correct affines) in ``folder``."""
    import nibabel as nib
    import numpy as np

    image: Any = nib.load(SAMPLE)
    data = np.asarray(image.dataobj)
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        corner = [int(rng.integers(0, max(1, n - size + 1))) for n in data.shape]
        crop = data[tuple(slice(c, c + size) for c in corner)]
        affine = image.affine.copy()
        affine[:3, 3] = image.affine[:3, :3] @ corner + image.affine[:3, 3]
        path = folder / f"case{i:02d}.nii.gz"
        nib.save(nib.Nifti1Image(crop, affine, image.header), path)
        paths.append(path)
    return paths


def untrained_model(architecture: Path, folder: Path) -> Path:
    """An untrained model of ``architecture`` (a configs/models YAML), saved in ``folder``."""
    import torch
    import yaml

    from medidiff.nets.checkpoint import save_model
    from medidiff.nets.model import DiffusionModel

    torch.manual_seed(0)
    config = yaml.safe_load(architecture.read_text())
    normalization = {"lower_percentile": 0.5, "upper_percentile": 99.5, "smooth_sigma": 1.0}
    model = DiffusionModel.from_config(config)
    return save_model(model, folder / "untrained.safetensors", extra={"normalization": normalization})


def run_cohort(inputs: Path, outdir: Path, model: str, workers: int, steps: int) -> tuple[float, list[float]]:
    """Wall seconds of one `restore-batch` run, and the per-case seconds from its status.csv."""
    command = [sys.executable, "-m", "medidiff", "restore-batch", str(inputs), str(outdir), "--task",
               "denoise", "--sigma", "5%", "--steps", str(steps), "--model", model, "--workers", str(workers),
               "--quiet"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"restore-batch failed ({proc.returncode}): {proc.stderr.strip()}")
    with (outdir / "status.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if any(row["status"] != "ok" for row in rows):
        raise SystemExit(f"not every case was restored: {[row['status'] for row in rows]}")
    return wall, [float(row["seconds"]) for row in rows]


def machine() -> str:
    """CPU model, usable cores and the load when the benchmark started (this machine may be shared)."""
    cpu = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        models = [
            line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")
        ]
        cpu = models[0].split(":", 1)[1].strip() if models else cpu
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{cpu}, {cores} usable cores, load average {load:.1f} at the start"


def table(results: list[dict[str, Any]]) -> str:
    """The Markdown table of the runs (speed-up relative to the first row)."""
    lines = [
        "| workers | torch threads each | wall (s) | volumes / min | speed-up | median s / volume |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    base = results[0]["per_minute"]
    for r in results:
        lines.append(
            f"| {r['workers']} | {r['threads']} | {r['wall']:.1f} | {r['per_minute']:.1f} | "
            f"{r['per_minute'] / base:.2f}x | {r['median']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default="default", help="model to restore with (default: the embedded one)"
    )
    parser.add_argument("--architecture", type=Path, help="use an untrained model of this model YAML instead")
    parser.add_argument("--volumes", type=int, default=8, help="cohort size (default 8)")
    parser.add_argument("--size", type=int, default=48, help="edge of each cubic crop in voxels (default 48)")
    parser.add_argument("--steps", type=int, default=10, help="denoising steps per volume (default 10)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts (default 1 2)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs per worker count, interleaved; the fastest is kept (3)"
    )
    parser.add_argument(
        "--doc", type=Path, default=DOC, help="Markdown file to update (default docs/benchmarks.md)"
    )
    parser.add_argument("--no-doc", action="store_true", help="only print the table")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from medidiff.inference.batch import worker_threads
    from medidiff.nets.checkpoint import DEFAULT_MODEL_DIR, DEFAULT_MODEL_NAME

    with tempfile.TemporaryDirectory(prefix="cohort-bench-") as tmp:
        folder = Path(tmp)
        default_missing = not (DEFAULT_MODEL_DIR / f"{DEFAULT_MODEL_NAME}.safetensors").is_file()
        if args.architecture or (args.model == "default" and default_missing):
            architecture = args.architecture or ROOT / "configs" / "models" / "small.yaml"
            model = str(untrained_model(architecture, folder))
            model_text = (
                f"an untrained model of `{architecture.resolve().relative_to(ROOT)}` (throughput depends on "
                "the architecture, not on the weights)"
            )
        else:
            model = args.model
            model_text = f"`{args.model}`"
        inputs = folder / "cohort"
        write_cohort(inputs, args.volumes, args.size)
        about = machine()
        runs: dict[int, list[tuple[float, list[float]]]] = {w: [] for w in args.workers}
        for repeat in range(args.repeats):  # interleaved, so a burst of load elsewhere hits every setting
            for workers in args.workers:
                outdir = folder / f"out-{workers}-{repeat}"
                runs[workers].append(run_cohort(inputs, outdir, model, workers, args.steps))
                print(f"{workers} worker(s), run {repeat + 1}: {runs[workers][-1][0]:.1f} s", file=sys.stderr)
        results = []
        for workers in args.workers:
            wall, seconds = min(runs[workers])  # the least disturbed run on a shared machine
            threads = worker_threads(workers) if workers > 1 else torch_threads()
            per_minute, median = 60 * args.volumes / wall, statistics.median(seconds)
            results.append(
                {
                    "workers": workers,
                    "threads": threads,
                    "wall": wall,
                    "per_minute": per_minute,
                    "median": median,
                }
            )
    body = table(results)
    print(body)
    if args.no_doc:
        return
    section = (
        "## Cohort throughput (`medidiff restore-batch`)\n\n"
        f"{args.volumes} volumes of {args.size}^3 voxels (crops of `data_samples/mni152_t1_2mm.nii.gz`), "
        f"`--task denoise --sigma 5% --steps {args.steps}`, model: {model_text}. Wall time of the whole "
        f"command (start-up and model loading included), fastest of {args.repeats} interleaved runs. Written "
        "by `benchmarks/cohort_throughput.py`.\n\n"
        f"Machine: {about}; torch {torch_version()}, Python {platform.python_version()}.\n\n{body}\n"
    )
    from benchmarks.docs_sections import replace_section

    replace_section(args.doc, "cohort-throughput", section)


def torch_threads() -> int:
    """Threads a single in-process run gets (torch's default: OMP_NUM_THREADS, else the cores)."""
    import torch

    return int(torch.get_num_threads())


def torch_version() -> str:
    import torch

    return str(torch.__version__)


if __name__ == "__main__":
    main()
