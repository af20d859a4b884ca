"""`medidiff sample` writes a NIfTI of the requested shape from a real (tiny) model, seeded."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from helpers import run_side_by_side

from medidiff.nets.checkpoint import save_model
from medidiff.nets.model import DiffusionModel


def test_sample_writes_requested_shape_and_is_seeded(tmp_path: Path, medidiff_env: dict[str, str]) -> None:
    torch.manual_seed(0)
    model = DiffusionModel.from_config(
        {
            "unet": {"channels": [8, 16], "attention_levels": [False, False], "num_res_blocks": 1},
            "patch_size": [16, 16, 16],
        }
    )
    path = save_model(model, tmp_path / "tiny.safetensors")
    args = ["--shape", "20", "18", "24", "--steps", "3", "--model", str(path), "--seed", "3", "--quiet"]
    # Two processes with the same seed, side by side (each pays the torch/MONAI imports).
    runs = run_side_by_side(
        {name: ["sample", str(tmp_path / name), *args] for name in ("a.nii.gz", "b.nii.gz")}, medidiff_env
    )
    for proc in runs.values():
        assert proc.returncode == 0, proc.stderr
    outs = [nib.load(tmp_path / name) for name in runs]
    assert outs[0].shape == (20, 18, 24)
    assert np.allclose(outs[0].header.get_zooms(), 1.0)
    assert np.array_equal(np.asarray(outs[0].dataobj), np.asarray(outs[1].dataobj))
