"""Run one (case, method) job and record its output, time and peak memory.

Two isolation modes, both honest about what they measure:

* ``subprocess`` (default): ``python -m medidiff.benchmark.worker JOB.json`` runs the job in a fresh
  interpreter. Peak memory is the kernel's RSS high-water mark of that process (``VmHWM``, or ``ru_maxrss``
  without /proc; the ``memory_measure`` column says ``ru_maxrss`` for both): it counts the interpreter, the
  libraries the method imports (torch for medidiff), the case's volumes and every transient buffer of the
  method, with no sampling gap. Time is the wall clock of the restoration call
  alone, started after the inputs (and the model) are loaded. The worker runs with ``OMP_WAIT_POLICY=PASSIVE``
  unless set otherwise: OpenMP's default spinning makes multi-threaded runs many times slower whenever
  other processes share the cores.
* ``inprocess``: the job runs inside the harness. A thread samples the process's RSS
  (:class:`medidiff.benchmark.rss.RssSampler`, /proc/self/statm) every 5 ms during the call and reports the
  maximum; it can miss spikes shorter than that and includes whatever the harness already holds. It exists
  for quick runs and tests.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from medidiff.benchmark.rss import RssSampler, peak_rss_mib

RESULT_NAME = "{method}.json"
OUTPUT_NAME = "{method}.nii.gz"
UNCERTAINTY_NAME = "{method}_uncertainty.nii.gz"


def _save(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    import nibabel as nib

    from medidiff.fsutil import atomic_path

    with atomic_path(path, suffix=".nii.gz") as tmp:
        nib.save(nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine), str(tmp))


def execute(job: dict[str, Any], measure: str = "ru_maxrss") -> dict[str, Any]:
    """Run a job: ``{case_dir, method, task, options, model, device, threads}``.

    Writes ``<method>.nii.gz`` (and ``<method>_uncertainty.nii.gz``) into the case folder and returns the
    result record (also written as ``<method>.json`` by the caller once scored).

    Args:
        job: the job description.
        measure: ``ru_maxrss`` (fresh process: its high-water mark) or ``sampled`` (in-process sampling).
    """
    from medidiff.benchmark.cases import load_saved_case
    from medidiff.benchmark.methods import run_method

    folder = Path(job["case_dir"])
    method = str(job["method"])
    if job.get("threads") and method == "medidiff":
        # OpenMP libraries read OMP_NUM_THREADS (set by the runner for worker processes); torch also obeys
        # set_num_threads, which works in-process too.
        import torch

        torch.set_num_threads(int(job["threads"]))
    case = load_saved_case(folder)
    rss_before = peak_rss_mib()
    args = (
        method,
        case,
        job["task"],
        dict(job.get("options", {})),
        str(job["model"]),
        job.get("device", "cpu"),
    )
    if measure == "sampled":
        with RssSampler() as sampler:
            result = run_method(*args)
        peak = sampler.peak_mib
    else:
        result = run_method(*args)
        peak = peak_rss_mib()
    _save(folder / OUTPUT_NAME.format(method=method), result.output, case.reference.affine)
    if result.uncertainty is not None:
        _save(folder / UNCERTAINTY_NAME.format(method=method), result.uncertainty, case.reference.affine)
    return {
        "method": method,
        "seconds": result.seconds,
        "network_evaluations": result.network_evaluations,
        "peak_rss_mib": peak,
        "rss_before_mib": rss_before,
        "memory_measure": measure,
        "has_uncertainty": result.uncertainty is not None,
        "info": result.info,
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m medidiff.benchmark.worker JOB.json RESULT.json``: run the job, write its record."""
    from medidiff.errors import MedidiffError
    from medidiff.fsutil import atomic_path
    from medidiff.memory import retain_freed_memory

    retain_freed_memory()  # as the `medidiff` command does, so the seconds are what a CLI user gets
    job_path, result_path = (argv if argv is not None else sys.argv[1:])[:2]
    job = json.loads(Path(job_path).read_text())
    try:
        record = execute(job)
    except MedidiffError as exc:
        print(f"medidiff: error: {exc}", file=sys.stderr)
        return 2
    with atomic_path(result_path) as tmp:
        tmp.write_text(json.dumps(record, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
