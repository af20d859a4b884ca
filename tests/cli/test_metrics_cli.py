"""`medidiff metrics`: hand-computed scores, masks, and one-line errors.

Two runs are real subprocesses, started together (each pays the torch/MONAI import, ~3 s); the other cases
call the same entry point, ``medidiff.cli.main.main``, in this process to keep the suite fast.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers import start_medidiff, wait_all
from scipy import ndimage

from medidiff import metrics

AFFINE = np.diag([1.5, 1.5, 3.0, 1.0])


def _save(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> str:
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return str(path)


def _in_process(args: list[str]) -> subprocess.CompletedProcess[str]:
    """``medidiff metrics ARGS`` through the CLI's main(), stdout/stderr captured like a subprocess."""
    import contextlib
    import io

    from medidiff.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["metrics", *args])
    return subprocess.CompletedProcess(["medidiff", "metrics", *args], code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, medidiff_env: dict[str, str]) -> dict[str, object]:
    root = tmp_path_factory.mktemp("metrics_cli")
    rng = np.random.default_rng(0)
    reference = np.zeros((24, 26, 20))
    reference[4:20, 5:21, 4:16] = 100 + 30 * ndimage.gaussian_filter(rng.normal(size=(16, 16, 12)), 1.5)
    noisy = reference + rng.normal(0, 4.0, reference.shape)
    mask = np.zeros(reference.shape, np.uint8)
    mask[6:18, 6:20, 5:15] = 1
    shifted = AFFINE.copy()
    shifted[0, 3] = 2.0
    files = {
        "ref": _save(root / "ref.nii.gz", reference),
        "offset": _save(root / "offset.nii.gz", reference + 2.5),
        "noisy": _save(root / "noisy.nii.gz", noisy),
        "mask": _save(root / "mask.nii.gz", mask),
        "short": _save(root / "short.nii.gz", reference[:, :, :-2].copy()),
        "shifted": _save(root / "shifted.nii.gz", reference, shifted),
    }
    subprocess_commands = {
        "json": [files["ref"], files["offset"], "--json"],
        "shape mismatch": [files["ref"], files["short"]],
    }
    in_process_commands = {
        "text masked": [files["ref"], files["offset"], "--mask", files["mask"], "--data-range", "100"],
        "auto": [files["ref"], files["noisy"], "--mask", "auto", "--json"],
        "geometry mismatch": [files["ref"], files["shifted"]],
        "missing test": [files["ref"], str(root / "nowhere.nii.gz")],
    }
    running = start_medidiff(
        {name: ["metrics", *args] for name, args in subprocess_commands.items()}, medidiff_env, cwd=root
    )
    done: dict[str, object] = {name: _in_process(args) for name, args in in_process_commands.items()}
    done.update(wait_all(running))
    done["arrays"] = {"reference": reference, "noisy": noisy, "mask": mask.astype(bool)}
    return done


def test_json_scores_match_hand_computed_values(runs: dict) -> None:
    proc = runs["json"]
    assert proc.returncode == 0, proc.stderr
    scores = json.loads(proc.stdout)
    reference = runs["arrays"]["reference"]
    peak = reference.max() - reference.min()
    assert scores["psnr"] == pytest.approx(10 * math.log10(peak**2 / 2.5**2), abs=1e-9)
    assert scores["nrmse"] == pytest.approx(2.5 * math.sqrt(reference.size) / np.linalg.norm(reference))
    assert scores["data_range"] == pytest.approx(peak)
    assert scores["mask"] == "none" and scores["voxels"] == reference.size


def test_text_output_with_a_mask_file_and_explicit_range(runs: dict) -> None:
    proc = runs["text masked"]
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"PSNR   {10 * math.log10(100.0**2 / 2.5**2):.3f} dB"
    assert lines[1].startswith("SSIM   ") and lines[2].startswith("NRMSE  ")
    assert f"{int(runs['arrays']['mask'].sum())} voxels" in lines[3] and "mask: given" in lines[3]


def test_auto_mask_scores_equal_the_python_api(runs: dict) -> None:
    proc = runs["auto"]
    assert proc.returncode == 0, proc.stderr
    scores = json.loads(proc.stdout)
    arrays = runs["arrays"]
    expected = metrics.compute_metrics(arrays["reference"], arrays["noisy"], mask="auto")
    for key in ("psnr", "ssim", "nrmse", "voxels"):
        assert scores[key] == pytest.approx(expected[key], rel=1e-9)
    assert scores["voxels"] < arrays["reference"].size  # the air really was left out


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("shape mismatch", "REFERENCE shape (24, 26, 20) and TEST shape (24, 26, 18) differ"),
        ("geometry mismatch", "different geometry"),
        ("missing test", "no such file"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(runs: dict, case: str, message: str) -> None:
    proc = runs[case]
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("medidiff: error: ")
    assert message in lines[0]
    assert proc.stdout == ""


def test_a_reader_leaving_early_ends_the_run_quietly(tmp_path: Path, medidiff_env: dict[str, str]) -> None:
    """``medidiff metrics A B | head -1``: the pipe's read end is gone before the scores are written."""
    ref = _save(tmp_path / "ref.nii.gz", np.arange(16 * 17 * 15, dtype=np.float64).reshape(16, 17, 15))
    read_end, write_end = os.pipe()
    os.close(read_end)
    proc = subprocess.run(
        [sys.executable, "-m", "medidiff", "metrics", ref, ref],
        stdout=write_end,
        stderr=subprocess.PIPE,
        text=True,
        env=medidiff_env,
        timeout=300,
    )
    os.close(write_end)
    assert proc.stderr == ""
    assert proc.returncode == 141
