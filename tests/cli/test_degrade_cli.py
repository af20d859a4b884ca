"""`medidiff degrade`: sidecars reproduce outputs exactly; masks and geometry are written; errors: one line.

Three runs are real subprocesses started together (each pays the torch/MONAI import, ~3 s): the same seeded
degradation twice, and a bad input. The other cases call the same entry point, ``medidiff.cli.main.main``,
in this process to keep the suite fast.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers import run_side_by_side

from medidiff.cli import degrade as degrade_cli


def _in_process(*args: str) -> subprocess.CompletedProcess[str]:
    from medidiff.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["degrade", *args])
    return subprocess.CompletedProcess(["medidiff", "degrade", *args], code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def seeded(
    tmp_path_factory: pytest.TempPathFactory, sample_nifti: Path, medidiff_env: dict[str, str]
) -> tuple[Path, dict[str, subprocess.CompletedProcess[str]]]:
    """The folder of the subprocess runs, and their outcomes by name."""
    folder = tmp_path_factory.mktemp("degrade_cli")
    sample = str(sample_nifti)
    commands = {
        "first": [sample, "a.nii.gz", "--kind", "rician", "--sigma", "5%", "--seed", "3"],
        "second": [sample, "b.nii.gz", "--kind", "rician", "--sigma", "5%", "--seed", "3"],
        "missing input": ["nowhere.nii.gz", "c.nii.gz", "--kind", "gaussian"],
    }
    argv = {name: ["degrade", *args] for name, args in commands.items()}
    return folder, run_side_by_side(argv, medidiff_env, cwd=folder)


def _data(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj)


Seeded = tuple[Path, dict[str, subprocess.CompletedProcess[str]]]


def test_same_seed_gives_identical_output_and_a_complete_sidecar(seeded: Seeded, sample_nifti: Path) -> None:
    root, runs = seeded
    for name in ("first", "second"):
        assert runs[name].returncode == 0, runs[name].stderr
    assert "a.nii.gz" in runs["first"].stdout
    assert np.array_equal(_data(root / "a.nii.gz"), _data(root / "b.nii.gz"))
    sidecar = json.loads((root / "a.nii.gz.json").read_text())
    assert sidecar["kind"] == "rician" and sidecar["seed"] == 3
    assert sidecar["medidiff_version"] and sidecar["input_shape"] == [76, 94, 79]
    clean = _data(sample_nifti).astype(np.float64)
    assert sidecar["params"]["sigma"] == pytest.approx(0.05 * np.percentile(clean, 99.5))
    assert _data(root / "a.nii.gz").dtype == np.float32
    # In air the output is Rayleigh(sigma): the requested level is what was added.
    air = clean == 0
    measured = np.sqrt(np.mean(_data(root / "a.nii.gz")[air].astype(np.float64) ** 2) / 2)
    assert measured == pytest.approx(sidecar["params"]["sigma"], rel=0.02)


def test_the_sidecar_replays_the_exact_output(seeded: Seeded, sample_nifti: Path) -> None:
    root = seeded[0]
    proc = _in_process(
        str(sample_nifti), str(root / "replay.nii.gz"), "--from-sidecar", str(root / "a.nii.gz.json")
    )
    assert proc.returncode == 0, proc.stderr
    assert np.array_equal(_data(root / "replay.nii.gz"), _data(root / "a.nii.gz"))


def test_bad_input_subprocess_is_one_line_and_exit_code_2(seeded: Seeded) -> None:
    root, runs = seeded
    proc = runs["missing input"]
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("medidiff: error: ") and "no such file" in lines[0]
    assert proc.stdout == "" and not (root / "c.nii.gz").exists() and not (root / "c.nii.gz.json").exists()


def test_holes_write_the_mask_next_to_the_output(sample_nifti: Path, tmp_path: Path) -> None:
    out = tmp_path / "holes.nii.gz"
    proc = _in_process(
        str(sample_nifti), str(out), "--kind", "holes", "--holes", "2", "--seed", "4", "--quiet"
    )
    assert proc.returncode == 0 and proc.stdout == "", proc.stderr
    mask_path = tmp_path / "holes_mask.nii.gz"
    mask = _data(mask_path)
    assert mask.dtype == np.uint8 and mask.sum() > 0
    assert np.all(_data(out)[mask > 0] == 0)
    assert json.loads((tmp_path / "holes.nii.gz.json").read_text())["mask"] == str(mask_path)
    assert np.allclose(nib.load(mask_path).affine, nib.load(sample_nifti).affine)


def test_slices_to_nrrd_with_an_explicit_mask_path(sample_nifti: Path, tmp_path: Path) -> None:
    from medidiff.io import read_volume

    mask_path = tmp_path / "elsewhere" / "m.nii.gz"
    mask_path.parent.mkdir()
    out = tmp_path / "s.nrrd"
    proc = _in_process(
        str(sample_nifti), str(out), "--kind", "slices", "--axis", "0", "--mask-out", str(mask_path)
    )
    assert proc.returncode == 0, proc.stderr
    sidecar = json.loads((tmp_path / "s.nrrd.json").read_text())
    mask = _data(mask_path)
    assert np.array_equal(np.flatnonzero(mask.all(axis=(1, 2))), sidecar["params"]["indices"])
    assert not (tmp_path / "s_mask.nrrd").exists()
    degraded = read_volume(out)
    assert degraded.shape == (76, 94, 79)
    assert np.all(degraded.data[sidecar["params"]["indices"]] == 0)


def test_thick_slices_get_the_right_affine(sample_nifti: Path, tmp_path: Path) -> None:
    out = tmp_path / "thick.nii.gz"
    proc = _in_process(str(sample_nifti), str(out), "--kind", "thick", "--factor", "3")
    assert proc.returncode == 0, proc.stderr
    image, source = nib.load(out), nib.load(sample_nifti)
    assert image.shape == (76, 94, 79 // 3)
    assert np.allclose(image.header.get_zooms(), (2.0, 2.0, 6.0))
    assert np.allclose(image.affine @ [0, 0, 0, 1], source.affine @ [0, 0, 1, 1])  # slab 0 = slices 0..2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kind", "blur", "--sigma", "3"], "--kind blur does not take --sigma"),
        (["--kind", "gaussian", "--sigma", "auto"], "--sigma auto"),
        (["--kind", "thick", "--factor", "1"], "--factor"),
        (["--from-sidecar", "notes.txt"], "not valid JSON"),
        (["--from-sidecar", "sidecar.json", "--holes", "3"], "drop --holes"),
        ([], "give --kind"),
    ],
)
def test_bad_options_are_one_line_and_exit_code_2(
    sample_nifti: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    (tmp_path / "notes.txt").write_text("not json")
    (tmp_path / "sidecar.json").write_text(json.dumps({"kind": "holes", "params": {}}))
    args = [str(tmp_path / a) if a in ("notes.txt", "sidecar.json") else a for a in args]
    proc = _in_process(str(sample_nifti), str(tmp_path / "out.nii.gz"), *args)
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("medidiff: error: ") and message in lines[0], proc.stderr
    assert not (tmp_path / "out.nii.gz").exists()


def test_existing_output_needs_overwrite(sample_nifti: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.nii.gz"
    assert _in_process(str(sample_nifti), str(out), "--kind", "bias", "--quiet").returncode == 0
    again = _in_process(str(sample_nifti), str(out), "--kind", "bias")
    assert again.returncode == 2 and "exists" in again.stderr
    assert (
        _in_process(str(sample_nifti), str(out), "--kind", "bias", "--seed", "1", "--overwrite").returncode
        == 0
    )


def test_paths_and_kinds() -> None:
    from medidiff.degrade import KINDS

    assert degrade_cli.KINDS == KINDS
    assert degrade_cli.sidecar_path("x/out.nii.gz") == Path("x/out.nii.gz.json")
    assert degrade_cli.default_mask_path("x/out.nii.gz") == Path("x/out_mask.nii.gz")
    assert degrade_cli.default_mask_path("x/out.nrrd") == Path("x/out_mask.nrrd")
    assert degrade_cli.default_mask_path("x/dicom_out/") == Path("x/dicom_out_mask")
