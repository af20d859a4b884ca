"""The benchmark loop: cases -> degrade -> restore (medidiff and the baselines) -> scores -> report.

Output directory layout::

    OUT/results.csv, OUT/results.md       the tables (one row per case and method)
    OUT/montages/<case>.png               one montage per case
    OUT/cases/<case>/                     reference, degraded input, mask, case.json,
                                          <method>.nii.gz (output), <method>.json (time, memory, scores)

Resuming: a case whose ``case.json`` digest matches the configuration is not re-degraded, and a method whose
``<method>.json`` holds scores for that digest is not re-run. Changing anything that affects a case (volume,
crop, degradation, seed, methods' options, model) changes its digest and reruns it.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medidiff.benchmark.cases import CaseData, load_saved_case, prepare_case, save_case, saved_digest
from medidiff.benchmark.config import BenchConfig, Case
from medidiff.benchmark.report import CALIBRATION_COLUMNS
from medidiff.benchmark.worker import OUTPUT_NAME, RESULT_NAME, UNCERTAINTY_NAME, execute
from medidiff.errors import ConfigError, MedidiffError

INPUT = "input"  # the degraded volume itself, scored like a method


@dataclass
class RunOptions:
    """Command-line choices layered over the config."""

    out: Path
    model: str | None = None
    resume: bool = True
    quiet: bool = False
    cases: list[str] = field(default_factory=list)  # fnmatch patterns on case ids
    methods: list[str] | None = None
    steps: int | None = None
    isolation: str | None = None


@dataclass
class RunSummary:
    """What a run did: all result rows, and how many jobs ran, were reused, or failed."""

    rows: list[dict[str, Any]]
    ran: int = 0
    reused: int = 0
    failed: int = 0


def _selected(config: BenchConfig, options: RunOptions) -> list[Case]:
    cases = config.cases()
    if options.cases:
        cases = [c for c in cases if any(fnmatch.fnmatch(c.id, p) for p in options.cases)]
        if not cases:
            raise ConfigError(f"no case matches {options.cases}; cases are {[c.id for c in config.cases()]}")
    return cases


def _methods(case: Case, options: RunOptions) -> list[str]:
    methods = list(case.degradation.methods)
    if options.methods is not None:
        methods = [m for m in methods if m in options.methods]
    return [INPUT, *methods]


def _medidiff_options(case: Case, options: RunOptions) -> dict[str, Any]:
    opts = dict(case.degradation.medidiff)
    if options.steps is not None:
        opts["steps"] = options.steps
    return opts


def _input_output(data: CaseData) -> np.ndarray:
    """The degraded volume on the reference grid (thick slices: each repeated, as a viewer shows them)."""
    from medidiff.benchmark.baselines import nearest_slices

    if "factor" in data.truth:
        return nearest_slices(data.degraded.data, int(data.truth["axis"]), int(data.truth["factor"]))
    return np.asarray(data.degraded.data, dtype=np.float64)


def _run_subprocess(job: dict[str, Any], folder: Path, threads: int) -> dict[str, Any]:
    job_path = folder / f"{job['method']}.job.json"
    result_path = folder / f"{job['method']}.run.json"
    job_path.write_text(json.dumps(job, indent=1) + "\n")
    # The folder that holds the medidiff package, so the worker imports this same medidiff (a source
    # checkout run without installing it included).
    home = str(Path(__file__).resolve().parents[2])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([home, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        **{name: str(threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
    }
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see medidiff.cli.benchmark.run
    proc = subprocess.run(
        [sys.executable, "-m", "medidiff.benchmark.worker", str(job_path), str(result_path)],
        env=env,
        capture_output=True,
        text=True,
    )
    job_path.unlink(missing_ok=True)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit code {proc.returncode}"
        raise MedidiffError(f"{job['method']} failed: {reason}")
    record = dict(json.loads(result_path.read_text()))
    result_path.unlink(missing_ok=True)
    return record


def _score(
    data: CaseData, case: Case, output: np.ndarray, foreground: np.ndarray, std: np.ndarray | None = None
) -> dict[str, Any]:
    from medidiff.benchmark.scoring import score

    region = {"foreground": foreground, "missing": data.missing, "none": None}[case.degradation.region]
    return score(data.reference.data, output, region, foreground, scale=case.degradation.scale_fit, std=std)


def _row(case: Case, method: str, record: dict[str, Any]) -> dict[str, Any]:
    metrics = record.get("metrics", {})
    return {
        "case": case.id,
        "volume": case.volume.name,
        "label": case.volume.label,
        "contrast": case.volume.contrast,
        "degradation": case.degradation.name,
        "task": case.degradation.task,
        "method": method,
        "psnr": metrics.get("psnr"),
        "ssim": metrics.get("ssim"),
        "psnr_region": metrics.get("psnr_region"),
        "region": case.degradation.region,
        "psnr_fit": metrics.get("psnr_fit"),
        **{key: metrics.get(key) for key in CALIBRATION_COLUMNS},
        "seconds": record.get("seconds"),
        "network_evaluations": record.get("network_evaluations"),
        "peak_rss_mib": record.get("peak_rss_mib"),
        "memory_measure": record.get("memory_measure", ""),
        "error": record.get("error", ""),
    }


def _load_record(path: Path, digest: str) -> dict[str, Any] | None:
    try:
        record = dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None
    return record if record.get("digest") == digest and ("metrics" in record or record.get("error")) else None


def code_digest(package: Path | None = None) -> str:
    """Digest of the Python sources of ``package`` (default: medidiff itself), path and content."""
    import hashlib

    root = package or Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def model_fingerprint(model: str) -> str:
    """Digest of the model's weights and config and of medidiff's code (the task defaults included), so that
    a retrained model (same name, e.g. ``default``), new defaults or a code change rerun medidiff while the
    baselines (which depend on none of these) are reused."""
    import hashlib

    from medidiff.nets.checkpoint import _model_paths

    h = hashlib.sha256(code_digest().encode())
    try:
        for path in _model_paths(model):
            h.update(path.read_bytes())
    except (OSError, MedidiffError):
        h.update(str(model).encode())  # unreadable: the run itself reports the error
    return h.hexdigest()[:16]


def run_case(
    case: Case,
    config: BenchConfig,
    options: RunOptions,
    model: str,
    summary: RunSummary,
    fingerprint: str,
) -> list[dict[str, Any]]:
    """Prepare (or reuse) one case, run (or reuse) each method, score, draw the montage.

    ``fingerprint`` (:func:`model_fingerprint`) keys medidiff's records beyond the case digest."""
    from medidiff.fsutil import atomic_path
    from medidiff.metrics import foreground_mask
    from medidiff.viz import Panel, render, save_montage

    folder = options.out / "cases" / case.id
    digest = case.digest(f"{model}|steps={options.steps}")
    if options.resume and saved_digest(folder) == digest:
        data = load_saved_case(folder)
    else:
        if folder.exists():
            shutil.rmtree(folder)
        data = prepare_case(case)
        save_case(data, folder, digest)
    foreground = foreground_mask(data.reference.data)
    isolation = options.isolation or config.isolation
    rows, panels, changed = [], [], False
    for method in _methods(case, options):
        path = folder / RESULT_NAME.format(method=method)
        expected = f"{digest}|{fingerprint}" if method == "medidiff" else digest
        record = _load_record(path, expected) if options.resume else None
        if record is None:
            changed = True
            try:
                if method == INPUT:
                    record = {"method": INPUT, "seconds": 0.0, "network_evaluations": 0}
                else:
                    job = {
                        "case_dir": str(folder),
                        "method": method,
                        "task": case.degradation.task,
                        "options": _medidiff_options(case, options),
                        "model": model,
                        "device": config.device,
                        "threads": config.threads,
                    }
                    if isolation == "subprocess":
                        record = _run_subprocess(job, folder, config.threads)
                    else:
                        record = execute(job, measure="sampled")
                output = (
                    _input_output(data)
                    if method == INPUT
                    else _read(folder / OUTPUT_NAME.format(method=method))
                )
                std_path = folder / UNCERTAINTY_NAME.format(method=method)
                std = _read(std_path) if record.get("has_uncertainty") and std_path.exists() else None
                record["metrics"] = _score(data, case, output, foreground, std)
                summary.ran += method != INPUT
            except MedidiffError as exc:
                record = {"method": method, "error": str(exc)}
                summary.failed += 1
            record["digest"] = expected
            with atomic_path(path) as tmp:
                tmp.write_text(json.dumps(record, indent=1, default=str) + "\n")
        else:
            summary.reused += method != INPUT
        rows.append(_row(case, method, record))
        if not record.get("error"):
            output = (
                _input_output(data) if method == INPUT else _read(folder / OUTPUT_NAME.format(method=method))
            )
            m = record["metrics"]
            subtitle = f"{m['psnr']:.2f} dB / {m['ssim']:.3f}"
            if case.degradation.scale_fit:
                # Shown after the same global scale fit that "PSNR fit" scores (N4 changes the scale).
                from medidiff.benchmark.scoring import scale_fit

                a = scale_fit(data.reference.data, output, foreground)
                output = a * np.asarray(output, dtype=np.float64)
                subtitle += f"\nfit {m['psnr_fit']:.2f} dB (x{a:.3g})"
            panels.append(Panel("degraded" if method == INPUT else method, output, subtitle))
            uncertainty = folder / UNCERTAINTY_NAME.format(method=method)
            if record.get("has_uncertainty") and uncertainty.exists():
                panels.append(
                    Panel(f"{method} std", _read(uncertainty), "posterior std", error=False, colour=True)
                )
    montage_path = options.out / "montages" / f"{case.id}.png"
    if changed or not montage_path.exists():
        montage_path.parent.mkdir(parents=True, exist_ok=True)
        title = f"{case.volume.label or case.volume.name}: {case.degradation.label or case.degradation.name}"
        image = render(data.reference.data, data.reference.affine, panels, title, data.missing, foreground)
        save_montage(image, montage_path)
    return rows


def _read(path: Path) -> np.ndarray:
    import nibabel as nib

    image: Any = nib.load(str(path))
    return np.asarray(image.dataobj, dtype=np.float32)


def run_benchmark(config: BenchConfig, options: RunOptions) -> RunSummary:
    """Run every selected case (with a progress bar over cases) and write the tables.

    Returns:
        The rows of all selected cases and the counts of jobs run, reused and failed.

    Raises:
        ConfigError: no case matches ``options.cases``, or a selected method needs an optional package that
            is not installed (bm4d); nothing has run then.
    """
    from medidiff.benchmark.methods import require_packages
    from medidiff.benchmark.report import write_tables
    from medidiff.progress import Progress

    model = options.model or config.model
    cases = _selected(config, options)
    # Before any work: a method whose optional package is missing (bm4d) would fail in every case.
    require_packages(m for case in cases for m in _methods(case, options) if m != INPUT)
    options.out.mkdir(parents=True, exist_ok=True)
    summary = RunSummary(rows=[])
    fingerprint = model_fingerprint(model)  # once per run: it reads the model's weights
    with Progress(len(cases), "benchmark", quiet=options.quiet or None) as bar:
        for case in cases:
            summary.rows.extend(run_case(case, config, options, model, summary, fingerprint))
            bar.update()
    write_tables(config, summary.rows, options.out, model)
    return summary
