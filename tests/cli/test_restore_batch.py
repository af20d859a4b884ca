"""`medidiff restore-batch`: a cohort restored by 2 worker processes and by 2 torchrun ranks; one scan is bad.

The model is an untrained tiny U-Net ((8, 16) channels, 16^3 patches): the cohort mechanics (splitting,
skipping, status, atomic outputs) do not depend on the weights. The cohort is 4 crops of the bundled 2 mm
MNI T1, one of them truncated half way.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from helpers import tiny_model_config

from medidiff.inference.batch import WORKER_DIED, BatchJob, Case, CaseStatus, run_cases, worker_threads

CROPS = [(20, 30, 30), (30, 40, 30), (25, 35, 35), (30, 30, 25)]
BAD = "case2.nii.gz"


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory, sample_nifti: Path) -> dict[str, Path]:
    """``model`` (tiny, untrained), ``inputs`` (case0..case3.nii.gz, 24x24x20 int16; case2 truncated)."""
    import torch

    from medidiff.nets.checkpoint import save_model
    from medidiff.nets.model import DiffusionModel

    root = tmp_path_factory.mktemp("cohort")
    torch.manual_seed(0)
    model = save_model(
        DiffusionModel.from_config(tiny_model_config()),
        root / "tiny.safetensors",
        extra={"normalization": {"lower_percentile": 0.5, "upper_percentile": 99.5, "smooth_sigma": 1.0}},
    )
    image = _nifti(sample_nifti)
    data = np.asarray(image.dataobj)
    inputs = root / "in"
    inputs.mkdir()
    for i, (x, y, z) in enumerate(CROPS):
        affine = image.affine.copy()
        affine[:3, 3] = image.affine[:3, :3] @ [x, y, z] + image.affine[:3, 3]
        nib.save(
            nib.Nifti1Image(data[x : x + 24, y : y + 24, z : z + 20], affine, image.header),
            inputs / f"case{i}.nii.gz",
        )
    whole = (inputs / BAD).read_bytes()
    (inputs / BAD).write_bytes(whole[: len(whole) // 2])
    return {"model": model, "inputs": inputs, "root": root}


def _nifti(path: Path) -> Any:
    return nib.load(path)


def _status(outdir: Path) -> dict[str, dict[str, str]]:
    with (outdir / "status.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["case", "input", "output", "status", "message", "seconds"]
    return {row["case"]: row for row in rows}


def _denoise(cohort: dict[str, Path], *extra: str | Path) -> list[str | Path]:
    return ["restore-batch", cohort["inputs"], *extra, "--task", "denoise", "--model", str(cohort["model"]),
            "--sigma", "5%", "--steps", "2", "--quiet"]  # fmt: skip


def _run(env: dict[str, str], *args: str | Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, *map(str, args)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def _in_process(*args: str | Path) -> subprocess.CompletedProcess[str]:
    from medidiff.cli.main import main
    from medidiff.progress import Progress

    out, err = io.StringIO(), io.StringIO()
    quiet = Progress._quiet_default
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([str(a) for a in args])
    finally:
        Progress.set_quiet(quiet)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def _check_restored(output: Path, source: Path) -> None:
    restored, original = _nifti(output), _nifti(source)
    assert restored.shape == original.shape == (24, 24, 20)
    np.testing.assert_allclose(restored.affine, original.affine, atol=1e-5)
    assert restored.get_data_dtype() == original.get_data_dtype()
    assert np.isfinite(restored.get_fdata()).all()


def test_two_workers_restore_the_cohort_report_the_bad_scan_and_resume(
    cohort: dict[str, Path], tmp_path: Path, medidiff_env: dict[str, str]
) -> None:
    out = tmp_path / "out"
    first = _run(medidiff_env, "-m", "medidiff", *_denoise(cohort, out, "--workers", "2"))
    assert first.returncode == 2, first.stderr
    assert first.stderr.count("\n") == 1 and "1 of 4 cases failed" in first.stderr and BAD in first.stderr
    status = _status(out)
    assert list(status) == [f"case{i}.nii.gz" for i in range(4)]
    assert {k: v["status"] for k, v in status.items()} == {
        "case0.nii.gz": "ok", "case1.nii.gz": "ok", BAD: "error", "case3.nii.gz": "ok"
    }  # fmt: skip
    assert "cannot read" in status[BAD]["message"] and float(status["case0.nii.gz"]["seconds"]) > 0
    for i in (0, 1, 3):
        _check_restored(out / f"case{i}.nii.gz", cohort["inputs"] / f"case{i}.nii.gz")
    assert sorted(p.name for p in out.iterdir()) == [
        "case0.nii.gz",
        "case1.nii.gz",
        "case3.nii.gz",
        "status.csv",
    ]

    # The re-run skips the finished cases (their outputs untouched) and still reports the bad scan.
    written = {i: (out / f"case{i}.nii.gz").stat().st_mtime_ns for i in (0, 1, 3)}
    second = _run(medidiff_env, "-m", "medidiff", *_denoise(cohort, out, "--workers", "2"))
    assert second.returncode == 2 and "1 of 4 cases failed" in second.stderr
    assert {k: v["status"] for k, v in _status(out).items()} == {
        "case0.nii.gz": "skipped", "case1.nii.gz": "skipped", BAD: "error", "case3.nii.gz": "skipped"
    }  # fmt: skip
    assert {i: (out / f"case{i}.nii.gz").stat().st_mtime_ns for i in (0, 1, 3)} == written


def test_torchrun_ranks_split_the_cohort_and_rank_0_merges_the_status(
    cohort: dict[str, Path], tmp_path: Path, medidiff_env: dict[str, str]
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "ranks"
    torchrun = ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port)]
    proc = _run(medidiff_env, *torchrun, "-m", "medidiff", *_denoise(cohort, out))
    assert proc.returncode != 0  # the bad scan
    assert proc.stderr.count("1 of 4 cases failed") == 1  # rank 0 reports for the whole cohort
    status = _status(out)
    assert [v["status"] for v in status.values()] == ["ok", "ok", "error", "ok"]
    assert not (out / ".status").exists()  # the per-rank parts were merged and removed
    # Same seed, same result, whichever rank restored the case (ranks take cases 0, 2 and 1, 3).
    reference = tmp_path / "one"
    _in_process(*_denoise(cohort, reference))
    for i in (0, 1, 3):
        assert (out / f"case{i}.nii.gz").read_bytes() == (reference / f"case{i}.nii.gz").read_bytes()


def test_manifest_paths_per_case_masks_and_output_names(
    cohort: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lists = tmp_path / "lists"
    lists.mkdir()
    for i in (0, 3):
        missing = np.zeros((24, 24, 20), np.uint8)
        missing[8 + i : 14 + i, 6:12, 5:10] = 1
        nib.save(
            nib.Nifti1Image(missing, _nifti(cohort["inputs"] / f"case{i}.nii.gz").affine),
            lists / f"m{i}.nii.gz",
        )
    relative = os.path.relpath(cohort["inputs"], lists)
    (lists / "cohort.csv").write_text(
        "input,output,mask\n"
        f"{relative}/case0.nii.gz,sub/a.nrrd,m0.nii.gz\n"
        f"{relative}/case3.nii.gz,,m3.nii.gz\n"
        f"{relative}/nope.nii.gz,,m3.nii.gz\n"
    )
    monkeypatch.chdir(cohort["root"])  # paths resolve against the CSV's folder, not the working directory
    out = tmp_path / "out"
    proc = _in_process("restore-batch", lists / "cohort.csv", out, "--task", "inpaint", "--model",
                       cohort["model"], "--steps", "2", "--output-format", "mha")  # fmt: skip
    assert proc.returncode == 2 and "1 of 3 cases failed" in proc.stderr
    status = _status(out)
    assert [v["status"] for v in status.values()] == ["ok", "ok", "error"]
    assert "no such file" in status[f"{relative}/nope.nii.gz"]["message"]
    from medidiff.io import read_volume

    for i, output in ((0, out / "sub" / "a.nrrd"), (3, out / "case3.mha")):
        restored, source = read_volume(output), read_volume(cohort["inputs"] / f"case{i}.nii.gz")
        known = _nifti(lists / f"m{i}.nii.gz").get_fdata() == 0
        # Inpainting keeps the known voxels, which shows this case's own mask was used.
        np.testing.assert_array_equal(restored.data[known], source.data[known])
        assert (restored.data[~known] != source.data[~known]).any()
        np.testing.assert_allclose(restored.affine, source.affine, atol=1e-4)

    # An interrupted run left the first case unwritten: the re-run restores it and skips the other one.
    (out / "sub" / "a.nrrd").unlink()
    again = _in_process("restore-batch", lists / "cohort.csv", out, "--task", "inpaint", "--model",
                        cohort["model"], "--steps", "2", "--output-format", "mha")  # fmt: skip
    assert again.returncode == 2
    assert [v["status"] for v in _status(out).values()] == ["ok", "skipped", "error"]
    assert (out / "sub" / "a.nrrd").is_file()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model", "nowhere.safetensors"], "nowhere.safetensors: no such model"),
        (["--task", "inpaint"], "needs --mask"),
        (["--output-format", "nii"], ""),  # valid: checked below against OUTDIR == INPUTS
    ],
)
def test_bad_invocations_fail_early_in_one_line(
    cohort: dict[str, Path], extra: list[str], message: str, tmp_path: Path
) -> None:
    args: list[str | Path] = ["restore-batch", cohort["inputs"], tmp_path / "out", "--task", "denoise"]
    args += ["--model", cohort["model"]]
    if not message:  # OUTDIR == INPUTS would make outputs new inputs
        args[2], message = cohort["inputs"], "OUTDIR must differ"
    proc = _in_process(*args, *extra)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()


def test_manifest_without_an_input_column_is_refused(cohort: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("path,output\na.nii.gz,b.nii.gz\n")
    proc = _in_process("restore-batch", tmp_path / "m.csv", tmp_path / "out", "--task", "denoise")
    assert proc.returncode == 2 and "needs an 'input' column" in proc.stderr


def _pid_or_crash(case: Case, job: BatchJob) -> CaseStatus:
    """A stand-in task: dies like an out-of-memory kill on the case named 'crash', else reports its pid."""
    if case.name == "crash":
        os._exit(9)
    message = f"{os.getpid()} {os.environ.get('OMP_NUM_THREADS')}"
    return CaseStatus(case.name, str(case.input), str(case.output), "ok", message)


def test_a_dying_worker_costs_only_its_own_case(tmp_path: Path) -> None:
    names = ["a", "crash", "b", "c", "d"]
    cases = [Case(n, tmp_path / n, tmp_path / f"{n}.out") for n in names]
    results: list[CaseStatus] = []
    run_cases(cases, BatchJob(), workers=2, report=results.append, task=_pid_or_crash)
    by_name = {r.case: r for r in results}
    assert sorted(by_name) == sorted(names) and len(results) == len(names)
    assert by_name["crash"].status == "error" and by_name["crash"].message == WORKER_DIED
    for name in ("a", "b", "c", "d"):
        pid, threads = by_name[name].message.split()
        assert by_name[name].status == "ok" and int(pid) != os.getpid()  # ran in a worker process
        assert threads == str(worker_threads(2))
