"""Cohort restoration: many cases, split across torchrun ranks and local worker processes, resumable.

A cohort is a folder (each NIfTI/NRRD/MHA file or DICOM series directory in it is a case) or a manifest CSV
(columns ``input``, optionally ``output`` and ``mask``). Every case is restored independently with the same
options and seed, so a case's result does not depend on which rank or worker restored it.

- **Resumable.** A case whose output exists is skipped; outputs are written atomically, so an interrupted run
  leaves whole outputs or none, and re-running the command finishes the rest.
- **Isolated.** A failing case (unreadable file, bad geometry, even a worker process that dies) is recorded
  as an error and the cohort goes on.
- **Status.** ``OUTDIR/status.csv`` lists every case (case, input, output, status ok/warning/skipped/error,
  message (notes and consistency warnings included),
  seconds), rewritten atomically as results arrive. Under torchrun each rank writes its own part
  (``OUTDIR/.status/rank-NNNNN.csv``) and rank 0 merges them once all ranks are done.

Heavy modules (torch, the I/O stack) are imported inside functions: spawned workers start light.
"""

from __future__ import annotations

import csv
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, fields
from datetime import timedelta
from pathlib import Path
from typing import Any

from medidiff.errors import ConfigError, InputError, MedidiffError, OutputError
from medidiff.fsutil import atomic_path
from medidiff.io.paths import METAIMAGE_SUFFIXES, NIFTI_SUFFIXES, NRRD_SUFFIXES, image_suffix

OUTPUT_FORMATS = ("same", "nii.gz", "nii", "nrrd", "mha", "dicom")
STATUSES = ("ok", "warning", "skipped", "error")
# Detached-header inputs are written as their single-file equivalents (atomic writes need one file).
_SAME_SUFFIX = {
    ".nii.gz": ".nii.gz",
    ".nii": ".nii",
    ".nrrd": ".nrrd",
    ".nhdr": ".nrrd",
    ".mha": ".mha",
    ".mhd": ".mha",
}
CASE_SUFFIXES = NIFTI_SUFFIXES + NRRD_SUFFIXES + METAIMAGE_SUFFIXES
# Ranks wait for each other only once, at the end; a shard may take days.
RANK_TIMEOUT = timedelta(days=7)
WORKER_DIED = "the worker process died while restoring this case (out of memory, or a crash in native code)"


@dataclass(frozen=True)
class Case:
    """One volume of the cohort: its name in the status file, input, output and optional inpainting mask."""

    name: str
    input: Path
    output: Path
    mask: Path | None = None


@dataclass
class CaseStatus:
    """One row of ``status.csv``."""

    case: str
    input: str
    output: str
    status: str
    message: str = ""
    seconds: float = 0.0


@dataclass
class BatchJob:
    """What is done to every case.

    Args:
        restore_kwargs: keyword arguments of :func:`medidiff.inference.pipeline.restore` except ``mask``.
        mask: inpainting mask for the cases that have none of their own.
        overwrite: restore cases whose output exists instead of skipping them.
        dtype: output voxel type (default: the input's).
    """

    restore_kwargs: dict[str, Any] = field(default_factory=dict)
    mask: Path | None = None
    overwrite: bool = False
    dtype: str | None = None


def one_line(text: object) -> str:
    """``text`` as a single line (status messages are one CSV cell)."""
    return " ".join(str(text).split())


def output_done(path: Path) -> bool:
    """True when ``path`` is an existing file or a non-empty directory (a written DICOM series)."""
    return path.is_file() or (path.is_dir() and any(path.iterdir()))


def output_path(outdir: Path, source: Path, output_format: str = "same") -> Path:
    """Where the restored ``source`` goes: ``OUTDIR/<name without suffix><suffix of output_format>``.

    ``same`` keeps the input's format (.nhdr/.mhd become .nrrd/.mha); DICOM outputs are series directories
    (dots in their names become underscores, as a directory name with a suffix would read as a file).
    """
    suffix = image_suffix(source)
    known = suffix in CASE_SUFFIXES
    stem = source.name[: -len(suffix)] if known else source.name
    if output_format == "same":
        new = _SAME_SUFFIX[suffix] if known else "dicom"
    elif output_format in OUTPUT_FORMATS:
        new = "dicom" if output_format == "dicom" else f".{output_format}"
    else:
        raise ConfigError(
            f"unknown output format {output_format!r} (choose from {', '.join(OUTPUT_FORMATS)})"
        )
    return outdir / stem.replace(".", "_") if new == "dicom" else outdir / f"{stem}{new}"


def find_cases(
    inputs: str | os.PathLike[str], outdir: str | os.PathLike[str], output_format: str = "same"
) -> list[Case]:
    """The cases of a folder or a manifest CSV, in a stable order (the same on every rank).

    Raises:
        InputError: INPUTS is missing, is neither a folder nor a .csv, the manifest is malformed, or holds
            no case.
        ConfigError: two cases would write the same output.
    """
    source, out = Path(inputs), Path(outdir)
    if out.exists() and not out.is_dir():
        raise OutputError(f"OUTDIR {out} exists and is not a directory")
    if source.is_dir():
        if out.resolve() == source.resolve():
            raise OutputError("OUTDIR must differ from the input folder (outputs would become new inputs)")
        cases = _folder_cases(source, out, output_format)
    elif source.is_file() and source.suffix.lower() == ".csv":
        cases = _manifest_cases(source, out, output_format)
    elif not source.exists():
        raise InputError(f"no such file or directory: {source}")
    else:
        raise InputError(f"{source}: INPUTS must be a folder of volumes or a manifest .csv")
    if not cases:
        raise InputError(f"{source}: no cases found (expected NIfTI/NRRD/MHA files or DICOM series folders)")
    seen: dict[Path, str] = {}
    for case in cases:
        key = case.output.resolve()
        if key in seen:
            raise ConfigError(f"cases {seen[key]!r} and {case.name!r} would both write {case.output}")
        seen[key] = case.name
    return cases


def _folder_cases(folder: Path, outdir: Path, output_format: str) -> list[Case]:
    cases = []
    skip = outdir.resolve()
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or entry.resolve() == skip:
            continue  # hidden entries include the temporary files of atomic writes
        if entry.is_dir() or (entry.is_file() and image_suffix(entry) in CASE_SUFFIXES):
            cases.append(Case(entry.name, entry, output_path(outdir, entry, output_format)))
    return cases


def _manifest_cases(manifest: Path, outdir: Path, output_format: str) -> list[Case]:
    """Rows of the manifest: ``input`` and ``mask`` relative to the CSV's folder, ``output`` to OUTDIR."""
    base = manifest.parent
    try:
        with manifest.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
            names = list(rows[0]) if rows else []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{manifest}: unreadable manifest ({one_line(exc)})") from None
    columns = {str(name).strip().lower(): name for name in names if name}
    if "input" not in columns:
        raise InputError(f"{manifest}: the manifest needs an 'input' column (found: {', '.join(columns)})")
    cases, names_seen = [], set()
    for line, row in enumerate(rows, start=2):
        cell = {key: str(row.get(name) or "").strip() for key, name in columns.items()}
        if not any(cell.values()):
            continue
        if not cell["input"]:
            raise InputError(f"{manifest}, line {line}: empty 'input'")
        if cell["input"] in names_seen:
            raise InputError(f"{manifest}, line {line}: {cell['input']!r} is listed twice")
        names_seen.add(cell["input"])
        source = base / cell["input"]
        output = outdir / cell["output"] if cell.get("output") else output_path(outdir, source, output_format)
        mask = base / cell["mask"] if cell.get("mask") else None
        cases.append(Case(cell["input"], source, output, mask))
    return cases


def restore_case(case: Case, job: BatchJob) -> CaseStatus:
    """Restore one case; never raises for a bad case: failures become an ``error`` status."""
    start = time.perf_counter()
    status = CaseStatus(case.name, str(case.input), str(case.output), "ok")
    try:
        if not job.overwrite and output_done(case.output):
            status.status, status.message = "skipped", "output exists"
            return status
        from medidiff.inference.pipeline import restore
        from medidiff.io import read_volume, write_volume
        from medidiff.io.paths import check_output_path

        mask_path = case.mask or job.mask
        inputs = [case.input, *([mask_path] if mask_path else [])]
        check_output_path(case.output, overwrite=job.overwrite, input_paths=inputs)
        volume = read_volume(case.input)
        mask = read_volume(mask_path) if mask_path else None
        result = restore(volume, full_result=True, mask=mask, **job.restore_kwargs)
        write_volume(result.volume, case.output, overwrite=job.overwrite, dtype=job.dtype, input_path=inputs)
        info = result.info
        parts = [str(info.get("task", "")), *([f"sigma {info['sigma']:.4g}"] if "sigma" in info else [])]
        parts += [f"note: {n}" for n in info.get("notes", [])]
        parts += [f"warning: {w}" for w in info.get("warnings", [])]
        if info.get("warnings"):
            status.status = "warning"  # written, but its consistency check failed: look at it
        status.message = one_line("; ".join(p for p in parts if p))
    except MedidiffError as exc:
        status.status, status.message = "error", one_line(exc)
    except Exception as exc:  # an internal failure on one scan must not stop the cohort
        status.status, status.message = "error", one_line(f"internal error: {type(exc).__name__}: {exc}")
    finally:
        status.seconds = round(time.perf_counter() - start, 3)
    return status


Task = Callable[[Case, BatchJob], CaseStatus]
Report = Callable[[CaseStatus], None]


def worker_threads(workers: int) -> int:
    """Torch threads per worker: this rank's share of the CPU cores, split evenly, at least 1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    per_rank = max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    return max(1, per_rank // max(1, workers))


def _init_worker(threads: int) -> None:
    """Worker start-up: ``threads`` torch/OpenMP threads, no progress lines, warnings off unless debugging."""
    import sys
    import warnings

    from medidiff.memory import retain_freed_memory
    from medidiff.progress import Progress

    retain_freed_memory()  # spawned workers start with glibc's defaults; the command that started them has it
    # torch reads these when first imported (by the first case), so the worker starts without torch.
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    Progress.set_quiet(True)
    if not os.environ.get("MEDIDIFF_DEBUG"):
        warnings.filterwarnings("ignore")


def run_cases(
    cases: Sequence[Case], job: BatchJob, workers: int, report: Report, task: Task = restore_case
) -> None:
    """Run ``task`` on every case, in this process (1 worker) or a spawned process pool; ``report`` each.

    A worker that dies takes the cases it and its siblings were running with it: those are retried one at
    a time in a fresh pool, and a case that kills its worker again is reported as an error.
    """
    workers = max(1, min(workers, len(cases)))
    if workers == 1:
        for case in cases:
            report(task(case, job))
        return
    threads = worker_threads(workers)
    queue = list(cases)
    while queue:
        lost, queue = _pool_round(queue, job, workers, threads, report, task)
        for case in lost:
            again, _ = _pool_round([case], job, 1, threads, report, task)
            if again:
                report(CaseStatus(case.name, str(case.input), str(case.output), "error", WORKER_DIED))


def _pool_round(
    cases: Sequence[Case], job: BatchJob, workers: int, threads: int, report: Report, task: Task
) -> tuple[list[Case], list[Case]]:
    """Run cases on a fresh pool until all are done or a worker dies: (cases lost, cases not started)."""
    pending = deque(cases)
    context = multiprocessing.get_context("spawn")  # fork is unsafe with threads (torch, OpenMP) running
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_init_worker, initargs=(threads,)
    ) as pool:
        running: dict[Future[CaseStatus], Case] = {}
        while pending or running:
            while pending and len(running) < workers:
                case = pending.popleft()
                running[pool.submit(task, case, job)] = case
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            if any(isinstance(f.exception(), BrokenProcessPool) for f in done):
                wait(running)  # a broken pool fails every unfinished future at once
                lost = []
                for future, case in running.items():
                    if isinstance(future.exception(), BrokenProcessPool):
                        lost.append(case)
                    else:
                        report(future.result())
                return lost, list(pending)
            for future in done:
                running.pop(future)
                report(future.result())
    return [], []


def write_status(path: Path, statuses: Sequence[CaseStatus]) -> None:
    """Write ``statuses`` as a CSV atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=[f.name for f in fields(CaseStatus)])
        writer.writeheader()
        for s in statuses:
            writer.writerow({**s.__dict__, "message": one_line(s.message), "seconds": f"{s.seconds:.3f}"})


def read_status(path: Path) -> list[CaseStatus]:
    """Read a status CSV written by :func:`write_status`."""
    with path.open(newline="", encoding="utf-8") as handle:
        return [CaseStatus(**{**row, "seconds": float(row["seconds"])}) for row in csv.DictReader(handle)]  # type: ignore[arg-type]


class _StatusFile:
    """Collects statuses and rewrites the CSV at most once a second, and at the end (``flush``)."""

    def __init__(self, path: Path, order: Sequence[Case]) -> None:
        self.path = path
        self.rank = {case.name: i for i, case in enumerate(order)}
        self.rows: dict[str, CaseStatus] = {}
        self.last = 0.0

    def add(self, status: CaseStatus) -> None:
        self.rows[status.case] = status
        if time.monotonic() - self.last >= 1.0:
            self.flush()

    def flush(self) -> list[CaseStatus]:
        rows = sorted(self.rows.values(), key=lambda s: self.rank.get(s.case, len(self.rank)))
        write_status(self.path, rows)
        self.last = time.monotonic()
        return rows


def restore_cohort(
    cases: Sequence[Case], job: BatchJob, outdir: Path, workers: int = 1, progress: bool = True
) -> list[CaseStatus] | None:
    """Restore this rank's share of ``cases`` with ``workers`` local processes and write the status CSV.

    Under torchrun (``WORLD_SIZE`` > 1) rank r takes cases r, r + W, r + 2W, ... of the list, writes its
    part of the status, and waits for the others; rank 0 then merges the parts into ``OUTDIR/status.csv``.

    Returns:
        Every case's status (single process, or rank 0), or None on the other ranks.
    """
    from medidiff.progress import Progress

    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    created = _join_ranks(world, job)
    try:
        mine = list(cases[rank::world])
        part = outdir / "status.csv" if world == 1 else outdir / ".status" / f"rank-{rank:05d}.csv"
        status_file = _StatusFile(part, cases)
        bar = Progress(len(mine), "restore-batch", quiet=not progress or rank != 0)

        def report(status: CaseStatus) -> None:
            status_file.add(status)
            bar.update()

        todo = []
        for case in mine:
            if not job.overwrite and output_done(case.output):
                report(CaseStatus(case.name, str(case.input), str(case.output), "skipped", "output exists"))
            else:
                todo.append(case)
        try:
            run_cases(todo, job, workers, report)
        finally:  # an interrupted run still leaves the status of the cases it finished
            rows = status_file.flush()
        if world == 1:
            return rows
        import torch.distributed as dist

        dist.barrier()  # every part is complete
        if rank != 0:
            return None
        parts = [outdir / ".status" / f"rank-{r:05d}.csv" for r in range(world)]
        merged = [s for p in parts for s in read_status(p)]
        order = {case.name: i for i, case in enumerate(cases)}
        merged.sort(key=lambda s: order.get(s.case, len(order)))
        write_status(outdir / "status.csv", merged)
        for stale in (outdir / ".status").glob("rank-*.csv"):
            stale.unlink()
        if not any((outdir / ".status").iterdir()):
            (outdir / ".status").rmdir()
        return merged
    finally:
        if created:
            import torch.distributed as dist

            dist.destroy_process_group()


def _join_ranks(world: int, job: BatchJob) -> bool:
    """Under torchrun: pick this rank's GPU and join a gloo group (used for the final barrier only)."""
    if world <= 1:
        return False
    import torch
    import torch.distributed as dist

    device = str(job.restore_kwargs.get("device", "auto"))
    if device in ("auto", "cuda") and torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    if dist.is_initialized():
        return False
    dist.init_process_group(backend="gloo", timeout=RANK_TIMEOUT)
    return True
