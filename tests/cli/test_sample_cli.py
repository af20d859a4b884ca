"""`medidiff sample` writes a NIfTI of the requested shape from a real (tiny) model, seeded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from medidiff.nets.checkpoint import save_model
from medidiff.nets.model import DiffusionModel


def test_sample_writes_requested_shape_and_is_seeded(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = DiffusionModel.from_config(
        {
            "unet": {"channels": [8, 16], "attention_levels": [False, False], "num_res_blocks": 1},
            "patch_size": [16, 16, 16],
        }
    )
    path = save_model(model, tmp_path / "tiny.safetensors")
    outs = []
    for name in ("a.nii.gz", "b.nii.gz"):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "medidiff",
                "sample",
                str(tmp_path / name),
                "--shape",
                "20",
                "18",
                "24",
                "--steps",
                "3",
                "--model",
                str(path),
                "--seed",
                "3",
                "--quiet",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        outs.append(nib.load(tmp_path / name))
    assert outs[0].shape == (20, 18, 24)
    assert np.allclose(outs[0].header.get_zooms(), 1.0)
    assert np.array_equal(np.asarray(outs[0].dataobj), np.asarray(outs[1].dataobj))
