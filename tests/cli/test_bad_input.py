"""Bad input through the real CLI: one line on stderr, exit code 2, no traceback, nothing written.

All cases run as concurrent subprocesses of ``python -m medidiff info``; those that need the voxels pay
the torch/MONAI import, so running them side by side keeps this module fast. More variants (garbage behind
an image suffix, a single-slice volume, Inf only, out-of-range --volume) are checked in-process in
tests/io/test_read_errors.py. Write-side refusals (output equal to the input, an existing output without
--overwrite) are checked through the API in tests/io/test_write_safety.py and through the CLI helpers that
writing commands use in test_output_refusals_through_cli_helpers below.
"""

from __future__ import annotations

import argparse
import subprocess
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers import run_side_by_side


def _load_nifti(path: Path) -> nib.Nifti1Image:
    """nibabel.load, typed (it is declared to return any image class)."""
    image = nib.load(str(path))
    assert isinstance(image, nib.Nifti1Image)
    return image


def _make_cases(root: Path, sample_nifti: Path, pydicom_test_files: Path) -> dict[str, tuple[list[str], str]]:
    """Build every bad input under ``root``; returns case -> (info arguments, expected message part)."""
    (root / "empty").mkdir()
    truncated = root / "truncated.nii.gz"
    raw = sample_nifti.read_bytes()
    truncated.write_bytes(raw[: len(raw) // 2])
    (root / "notes.txt").write_text("this is not an image\n")
    nib.save(nib.Nifti1Image(np.zeros((32, 32), np.float32), np.eye(4)), str(root / "flat.nii.gz"))
    four = np.stack([np.full((6, 6, 6), t, np.int16) for t in range(3)], axis=-1)
    nib.save(nib.Nifti1Image(four, np.eye(4)), str(root / "four.nii.gz"))
    nan = np.ones((6, 6, 6), np.float32)
    nan[1, 2, 3] = np.nan
    nan[0, 0, 0] = np.inf
    nib.save(nib.Nifti1Image(nan, np.eye(4)), str(root / "nan.nii.gz"))
    two_series = pydicom_test_files / "dicomdirtests" / "98892001"  # CT2N (scout) + CT5N
    return {
        "missing path": ([str(root / "nowhere.nii.gz")], "no such file"),
        "empty directory": ([str(root / "empty")], "is empty"),
        "truncated nii.gz": ([str(truncated)], "cannot read"),
        "non-image file": ([str(root / "notes.txt")], "not an image"),
        "two series": ([str(two_series)], "2 DICOM series"),
        "unknown series": ([str(two_series), "--series", "1.2.3"], "not in"),
        "2D image": ([str(root / "flat.nii.gz")], "2D"),
        "4D image": ([str(root / "four.nii.gz")], "--volume"),
        "NaN/Inf voxels": ([str(root / "nan.nii.gz")], "2 NaN/Inf voxels"),
    }


@dataclass
class Outcome:
    """One CLI run: the process, the message part expected, and the files around it before and after."""

    proc: subprocess.CompletedProcess[str]
    expected: str
    files_before: list[str]
    files_after: list[str]


@pytest.fixture(scope="module")
def results(
    tmp_path_factory: pytest.TempPathFactory,
    sample_nifti: Path,
    pydicom_test_files: Path,
    medidiff_env: dict[str, str],
) -> dict[str, Outcome]:
    """Run every case concurrently and collect the outcomes by case name."""
    root = tmp_path_factory.mktemp("bad_input")
    cases = _make_cases(root, sample_nifti, pydicom_test_files)
    before = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    commands = {name: ["info", *args] for name, (args, _) in cases.items()}
    finished = run_side_by_side(commands, medidiff_env, cwd=root)
    after = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    return {name: Outcome(finished[name], cases[name][1], before, after) for name in cases}


CASES = [
    "missing path",
    "empty directory",
    "truncated nii.gz",
    "non-image file",
    "two series",
    "unknown series",
    "2D image",
    "4D image",
    "NaN/Inf voxels",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_clear_line(case: str, results: dict[str, Outcome]) -> None:
    outcome = results[case]
    proc, expected = outcome.proc, outcome.expected
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("medidiff: error: ")
    assert expected in lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stdout == ""
    assert outcome.files_after == outcome.files_before  # nothing created next to the inputs


def test_every_case_ran(results: dict[str, Outcome]) -> None:
    assert sorted(results) == sorted(CASES)


def test_two_series_error_lists_both(results: dict[str, Outcome]) -> None:
    line = results["two series"].proc.stderr
    assert "'Scout' (2 files)" in line and "'SmartScore - Gated 0.5 sec' (5 files)" in line
    assert "1.3.6.1.4.1.5962.1.1.0.0.0.1194734704.16302.0.6" in line


def test_output_refusals_through_cli_helpers(sample_nifti: Path, tmp_path: Path) -> None:
    """What a writing command does with --overwrite/--dtype: refuse the input and an existing output."""
    from medidiff.cli.common import (
        add_input_options,
        add_output_options,
        check_output,
        read_input,
        write_output,
    )
    from medidiff.errors import OutputError

    parser = argparse.ArgumentParser()
    add_input_options(parser)
    add_output_options(parser)
    args = parser.parse_args([])
    volume = read_input(args, sample_nifti)
    with pytest.raises(OutputError, match="is the input"):
        check_output(args, sample_nifti, reference=volume)
    existing = tmp_path / "result.nii.gz"
    existing.write_bytes(b"old")
    with pytest.raises(OutputError, match="--overwrite"):
        write_output(args, volume, existing, reference=volume)
    assert existing.read_bytes() == b"old"
    args = parser.parse_args(["--overwrite", "--dtype", "float32"])
    write_output(args, volume, existing, reference=volume)
    assert _load_nifti(existing).get_data_dtype() == np.float32
