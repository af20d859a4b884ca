"""`medidiff info`: text and JSON descriptions of the bundled samples, through real subprocesses."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from helpers import run_side_by_side

from medidiff.cli.main import main


def _load_nifti(path: Path) -> nib.Nifti1Image:
    """nibabel.load, typed (it is declared to return any image class)."""
    image = nib.load(str(path))
    assert isinstance(image, nib.Nifti1Image)
    return image


@pytest.fixture(scope="module")
def runs(
    sample_nifti: Path, sample_dicom_dir: Path, medidiff_env: dict[str, str]
) -> dict[str, subprocess.CompletedProcess[str]]:
    """`info` on the NIfTI sample (text) and on the DICOM sample (--json), run side by side."""
    commands = {
        "nifti text": ["info", str(sample_nifti)],
        "dicom json": ["info", str(sample_dicom_dir), "--json"],
    }
    return run_side_by_side(commands, medidiff_env)


def test_text_output_of_the_nifti_sample(runs: dict[str, subprocess.CompletedProcess[str]]) -> None:
    proc = runs["nifti text"]
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    fields = dict(line.split(":", 1) for line in proc.stdout.splitlines())
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    assert fields["shape"] == "76 x 94 x 79"
    assert fields["spacing (mm)"] == "2 x 2 x 2"
    assert fields["orientation"] == "RAS"
    assert fields["dtype"] == "int16"
    low, high = (float(v) for v in fields["intensity range"].split(".."))
    data = np.asarray(_load_nifti(Path(fields["path"])).dataobj)
    assert (low, high) == (data.min(), data.max())
    assert fields["modality"] == "-"
    assert fields["series description"] == "MNI152 2009a T1 2mm"
    assert fields["series found"] == "1"


def test_json_output_of_the_dicom_sample(runs: dict[str, subprocess.CompletedProcess[str]]) -> None:
    proc = runs["dicom json"]
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout)
    assert facts["format"] == "dicom"
    assert facts["shape"] == [76, 94, 79]
    assert facts["spacing"] == pytest.approx([2.0, 2.0, 2.0])
    assert facts["orientation"] == "RAS"
    assert facts["dtype"] == "int16"
    assert facts["modality"] == "MR"
    assert facts["series_description"] == "MNI152 2009a T1 2mm medidiff"
    assert facts["n_series"] == 1 and len(facts["series"]) == 1
    assert facts["series"][0]["files"] == 79
    assert facts["series_uid"] == facts["series"][0]["uid"]
    assert np.asarray(facts["affine"]).shape == (4, 4)


def test_series_and_volume_options(
    tmp_path: Path, pydicom_test_files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = pydicom_test_files / "dicomdirtests" / "98892001"
    ct_uid = "1.3.6.1.4.1.5962.1.1.0.0.0.1194734704.16302.0.6"
    assert main(["info", str(study), "--series", ct_uid, "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["n_series"] == 2 and facts["series_uid"] == ct_uid and facts["shape"] == [16, 16, 5]
    four = np.stack([np.full((5, 6, 7), 3 * t, np.int16) for t in range(4)], axis=-1)
    nib.save(nib.Nifti1Image(four, np.eye(4)), str(tmp_path / "four.nii.gz"))
    assert main(["info", str(tmp_path / "four.nii.gz"), "--volume", "2"]) == 0
    text = capsys.readouterr().out
    assert "volume:             2 of 4" in text and "intensity range:    6 .. 6" in text


def test_help_lists_the_input_options(run_cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    proc = run_cli("info", "--help")
    assert proc.returncode == 0
    for option in ("--series UID", "--volume N", "--json"):
        assert option in proc.stdout
