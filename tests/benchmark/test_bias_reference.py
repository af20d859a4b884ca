"""benchmarks/bias_reference.py: a bias case's outputs scored against the reference and N4 of it."""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from benchmarks.bias_reference import main, score_case
from medidiff.n4 import n4_correct


def _save(path: Path, data: np.ndarray) -> None:
    nib.save(nib.Nifti1Image(data.astype(np.float32), np.diag([2.0, 2.0, 2.0, 1.0])), str(path))


def test_outputs_are_scored_against_both_references(tmp_path: Path) -> None:
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, 32)] * 3, indexing="ij"))
    ball = (np.sum(grid**2, axis=0) < 0.7).astype(float)
    inner = (np.sum(grid**2, axis=0) < 0.2).astype(float)
    reference = 100 * ball + 50 * inner
    reference *= np.exp(0.2 * grid[0])  # the scan's own field
    folder = tmp_path / "cases" / "v__bias"
    folder.mkdir(parents=True)
    _save(folder / "reference.nii.gz", reference)
    _save(folder / "degraded.nii.gz", reference * np.exp(0.3 * grid[1]))
    _save(folder / "medidiff.nii.gz", 2 * reference)  # exact up to the scale the fit removes
    _save(folder / "medidiff_uncertainty.nii.gz", np.ones_like(reference))
    flat = tmp_path / "flat.nii.gz"
    _save(flat, 3 * n4_correct(reference, (2.0, 2.0, 2.0)))  # N4's own answer, up to scale
    rows = {label: (raw, corrected) for label, raw, corrected in score_case(folder, {"flat": flat})}
    assert list(rows) == ["degraded input", "medidiff", "flat"]  # the map is not an output
    assert rows["medidiff"][0] > 60 and rows["flat"][1] > 60  # each exact against its own reference
    assert rows["flat"][0] < rows["medidiff"][0] and rows["medidiff"][1] < rows["flat"][1]
    assert all(math.isfinite(v) for v in rows["degraded input"])
    assert rows["degraded input"][0] < rows["medidiff"][0]


def test_a_run_without_bias_cases_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--run", str(tmp_path)]) == 0
    assert "no bias case" in capsys.readouterr().err
