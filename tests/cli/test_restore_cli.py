"""``medidiff restore`` as real subprocesses, with a tiny untrained model on crops of the sample brain.

All runs start at once in one module fixture (each pays ~3 s of torch/MONAI imports, so running them side by
side keeps the module fast); the tests then read their outcomes. Bad input must give exit code 2, exactly one
line on stderr, no traceback and no output file; most such cases are refused before any heavy import.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers import run_side_by_side

from medidiff.restoration.operators import SliceProfile, operator_from_spec


class _Unpickled:
    """Writes a marker file if anyone unpickles it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Path(self.marker).write_text, ("unpickled",))


def _save(data: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def _load(path: Path) -> tuple[np.ndarray, np.ndarray, np.dtype]:
    image = nib.load(str(path))
    assert isinstance(image, nib.Nifti1Image)
    return np.asarray(image.dataobj), image.affine, image.get_data_dtype()


@pytest.fixture(scope="module")
def files(
    tmp_path_factory: pytest.TempPathFactory, sample_nifti: Path, tiny_model_path: Path
) -> dict[str, Path]:
    """Inputs of every run: a noisy int16 crop, masks, a thick-slice crop, a NaN volume, models."""
    root = tmp_path_factory.mktemp("restore_cli")
    brain = nib.load(str(sample_nifti))
    assert isinstance(brain, nib.Nifti1Image)
    data = np.asarray(brain.dataobj).astype(np.float64)

    def crop(start: tuple[int, int, int], size: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
        index = tuple(slice(s, s + n) for s, n in zip(start, size, strict=True))
        affine = brain.affine.copy()
        affine[:3, 3] = brain.affine[:3, :3] @ np.asarray(start, dtype=np.float64) + brain.affine[:3, 3]
        return data[index], affine

    clean, affine = crop((26, 35, 28), (24, 24, 24))
    noisy = np.rint(clean + np.random.default_rng(0).normal(0, 60, clean.shape)).astype(np.int16)
    mask = np.zeros(clean.shape, np.uint8)
    mask[8:14, 6:12, 9:15] = 1
    mask[:, :, 18] = 1
    fine, fine_affine = crop((26, 35, 22), (24, 24, 36))
    profile = SliceProfile(axis=2, factor=3)
    thick = profile(torch.from_numpy(fine)[None, None])[0, 0].numpy()
    nan = noisy.astype(np.float32)
    nan[3, 4, 5] = np.nan
    (root / "model.pt").write_bytes(pickle.dumps(_Unpickled(root / "unpickled")))
    (root / "exists.nii.gz").write_bytes(b"keep me")
    return {
        "root": root,
        "model": tiny_model_path,
        "noisy": _save(noisy, affine, root / "noisy.nii.gz"),
        "mask": _save(mask, affine, root / "mask.nii.gz"),
        "small_mask": _save(mask[:20], affine, root / "small_mask.nii.gz"),
        "thick": _save(
            np.rint(thick).astype(np.int16), profile.output_affine(fine_affine), root / "thick.nii.gz"
        ),
        "fine_affine": _save(np.zeros((1, 1, 1), np.uint8), fine_affine, root / "fine_affine.nii.gz"),
        "nan": _save(nan, affine, root / "nan.nii.gz"),
    }


def _commands(f: dict[str, Path]) -> dict[str, list[str]]:
    """name -> restore arguments. ``bad:`` runs must fail; every run writes ``out_<name>.nii.gz``."""
    model = ["--model", str(f["model"])]
    denoise = [str(f["noisy"]), "--task", "denoise", "--samples", "3", "--steps", "2", *model]
    runs = {
        "seed1": [*denoise, "--seed", "1", "--uncertainty", "std_seed1.nii.gz"],
        "seed1_again": [*denoise, "--seed", "1", "--uncertainty", "std_seed1_again.nii.gz"],
        "inpaint": [
            str(f["noisy"]),
            "--task",
            "inpaint",
            "--mask",
            str(f["mask"]),
            "--steps",
            "3",
            "--quiet",
            *model,
        ],
        "slices": [
            *(str(f["thick"]), "--task", "restore", "--degradation", "thick-slices", "--target-spacing", "2"),
            *("--steps", "2", "--params-out", "params.json", *model),
        ],
    }
    bad = {
        "mask of the wrong shape": ["--task", "inpaint", "--mask", str(f["small_mask"])],
        "inpaint without mask": ["--task", "inpaint"],
        "restore without degradation": ["--task", "restore"],
        "missing model path": ["--task", "denoise", "--model", str(f["root"] / "nowhere.safetensors")],
        "pickled model": ["--task", "denoise", "--model", str(f["root"] / "model.pt")],
        "uncertainty of one sample": ["--task", "denoise", "--uncertainty", "std_bad.nii.gz"],
        "params-out without restore": ["--task", "denoise", "--params-out", "bad.json"],
        "too many views": ["--task", "denoise", "--views", "9"],
    }
    for name, args in bad.items():
        runs[f"bad:{name}"] = [str(f["noisy"]), *args, *(model if "--model" not in args else [])]
    runs["bad:NaN input"] = [str(f["nan"]), "--task", "denoise", *model]
    return runs


# The outputs of the two cases whose output path is chosen on purpose: the input itself, an existing file.
SPECIAL_OUTPUTS = {"bad:output equals input": "noisy.nii.gz", "bad:existing output": "exists.nii.gz"}
MESSAGES = {
    "mask of the wrong shape": "shape",
    "inpaint without mask": "--mask",
    "restore without degradation": "--degradation",
    "missing model path": "no such model",
    "pickled model": "pickled",
    "uncertainty of one sample": "--samples 2",
    "params-out without restore": "only for --task restore",
    "too many views": "--views must be between 1 and 8",
    "NaN input": "NaN",
    "output equals input": "is the input",
    "existing output": "exists",
}


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    output: Path


@pytest.fixture(scope="module")
def runs(files: dict[str, Path], medidiff_env: dict[str, str]) -> dict[str, Run]:
    """Start every run at once, wait for all, and collect the outcomes by name."""
    root = files["root"]
    commands = _commands(files)
    outputs = {name: root / f"out_{name.replace(':', '_').replace(' ', '_')}.nii.gz" for name in commands}
    for name, output in SPECIAL_OUTPUTS.items():  # a plain denoise run: only its output path is bad
        commands[name] = [str(files["noisy"]), "--task", "denoise", "--model", str(files["model"])]
        outputs[name] = root / output
    argv = {name: ["restore", args[0], str(outputs[name]), *args[1:]] for name, args in commands.items()}
    finished = run_side_by_side(argv, medidiff_env, cwd=root)
    return {name: Run(p.returncode, p.stdout, p.stderr, outputs[name]) for name, p in finished.items()}


def _ok(run: Run) -> Run:
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    return run


# ----------------------------------------------------------------------------- successful runs
def test_denoise_samples_write_the_output_and_a_positive_uncertainty(
    runs: dict[str, Run], files: dict[str, Path]
) -> None:
    run = _ok(runs["seed1"])
    data, affine, dtype = _load(run.output)
    source, source_affine, source_dtype = _load(files["noisy"])
    assert data.shape == source.shape and dtype == source_dtype == np.int16
    np.testing.assert_allclose(affine, source_affine, atol=1e-5)
    std, std_affine, std_dtype = _load(files["root"] / "std_seed1.nii.gz")
    assert std_dtype == np.float32 and std.shape == source.shape
    np.testing.assert_allclose(std_affine, source_affine, atol=1e-5)
    assert float(std.min()) >= 0 and float(np.median(std)) > 0
    # 3 samples x 2 steps, each evaluation averaged over denoising's 2 mirrored views.
    assert run.stdout.startswith(f"restored {run.output} (denoise, 12 network evaluations over 2 views")
    # Not a TTY: progress comes as machine-readable lines (3 samples x 2 steps), nothing else on stderr.
    lines = run.stderr.splitlines()
    # progress lines (the network's one-off OpenVINO compilation, then the denoising) and the one-line
    # notes and warnings (this tiny untrained model's result fails the consistency check, and says so)
    stages = (
        "medidiff-progress denoise ",
        "medidiff-progress compile ",
        "medidiff: warning: ",
        "medidiff: note: ",
    )
    assert lines and all(line.startswith(stages) for line in lines), run.stderr
    progress = [line for line in lines if line.startswith("medidiff-progress denoise ")]
    assert progress[-1] == "medidiff-progress denoise 6/6"


def test_same_seed_gives_identical_files(runs: dict[str, Run], files: dict[str, Path]) -> None:
    """Two processes, same --seed: identical outputs and uncertainty maps. (That another seed gives other
    draws is checked through the API in tests/inference/test_pipeline.py, sparing a subprocess.)"""
    first, again = (_load(_ok(runs[name]).output)[0] for name in ("seed1", "seed1_again"))
    assert np.array_equal(first, again)
    std, std_again = (_load(files["root"] / f"std_{name}.nii.gz")[0] for name in ("seed1", "seed1_again"))
    assert np.array_equal(std, std_again)


def test_inpaint_keeps_known_voxels(runs: dict[str, Run], files: dict[str, Path]) -> None:
    run = _ok(runs["inpaint"])
    assert run.stdout == run.stderr == ""  # --quiet
    data, affine, dtype = _load(run.output)
    source, source_affine, _ = _load(files["noisy"])
    missing = _load(files["mask"])[0] != 0
    assert dtype == np.int16
    np.testing.assert_allclose(affine, source_affine, atol=1e-5)
    assert np.array_equal(data[~missing], source[~missing])
    assert not np.array_equal(data[missing], source[missing])


def test_thick_slices_come_back_at_the_target_spacing_with_params(
    runs: dict[str, Run], files: dict[str, Path]
) -> None:
    """(24, 24, 12) slices of 6 mm -> (24, 24, 36) at 2 mm on the grid the thick slices were made from."""
    run = _ok(runs["slices"])
    data, affine, dtype = _load(run.output)
    thick_affine = _load(files["thick"])[1]
    assert data.shape == (24, 24, 36) and dtype == np.int16
    np.testing.assert_allclose(np.linalg.norm(affine[:3, :3], axis=0), [2.0, 2.0, 2.0], atol=1e-5)
    np.testing.assert_allclose(affine, _load(files["fine_affine"])[1], atol=1e-4)
    # each thick slice sits at the mean position of its 3 fine slices
    fine = affine @ np.stack([np.zeros(36), np.zeros(36), np.arange(36.0), np.ones(36)])
    coarse = thick_affine @ np.stack([np.zeros(12), np.zeros(12), np.arange(12.0), np.ones(12)])
    np.testing.assert_allclose(fine[:3].reshape(3, 12, 3).mean(axis=2), coarse[:3], atol=1e-4)
    params = json.loads((files["root"] / "params.json").read_text())
    assert set(params) == {"thick-slices"}
    spec = params["thick-slices"]
    assert spec["type"] == "slice_profile" and spec["axis"] == 2 and spec["factor"] == 3
    assert 0.3 <= spec["sigma"] <= 6.0
    assert isinstance(operator_from_spec(spec), SliceProfile)  # the record replays as an operator


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("case", list(MESSAGES))
def test_bad_input_is_one_clear_line_and_writes_nothing(
    case: str, runs: dict[str, Run], files: dict[str, Path]
) -> None:
    run = runs[f"bad:{case}"]
    assert run.returncode == 2, run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("medidiff: error: ") and MESSAGES[case] in lines[0], lines[0]
    assert "Traceback" not in run.stdout + run.stderr and run.stdout == ""
    if case == "existing output":
        assert run.output.read_bytes() == b"keep me"
    elif case != "output equals input":
        assert not run.output.exists()
    assert not list(files["root"].glob(f".{run.output.name}*"))  # no temporary file left behind
    assert not (files["root"] / "unpickled").exists()


def test_every_run_was_checked(runs: dict[str, Run]) -> None:
    bad = {name.removeprefix("bad:") for name in runs if name.startswith("bad:")}
    assert bad == set(MESSAGES)
    assert not (Path(runs["bad:params-out without restore"].output).parent / "bad.json").exists()
    assert not (Path(runs["bad:uncertainty of one sample"].output).parent / "std_bad.nii.gz").exists()


def test_pickle_suffixes_agree_with_the_loader() -> None:
    from medidiff.cli.restore import PICKLE_SUFFIXES as CLI_SUFFIXES
    from medidiff.nets.checkpoint import PICKLE_SUFFIXES

    assert CLI_SUFFIXES == PICKLE_SUFFIXES


def test_the_old_spelling_slices_is_accepted_with_a_note(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from medidiff.cli.restore import check_task_options

    args = argparse.Namespace(
        task="restore",
        degradation="bias,slices",
        mask=None,
        noise="gaussian",
        sigma="auto",
        target_spacing=None,
        fwhm=None,
        steps=None,
        samples=None,
        views=None,
        uncertainty=None,
        params_out=None,
        model="default",
        quiet=False,
        backend="auto",
        device="auto",
    )
    check_task_options(args)
    assert capsys.readouterr().err.strip() == (
        "medidiff: note: --degradation slices is a deprecated spelling of thick-slices; use thick-slices"
    )
