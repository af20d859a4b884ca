"""Fixtures of the benchmark tests: a tiny untrained model and a shrunken copy of configs/bench/quick.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from medidiff.nets.checkpoint import save_model
from medidiff.nets.model import DiffusionModel

REPO = Path(__file__).resolve().parents[2]
QUICK = REPO / "configs" / "bench" / "quick.yaml"
TINY = {
    "unet": {
        "channels": [8, 8],
        "num_res_blocks": 1,
        "attention_levels": [False, False],
        "norm_num_groups": 8,
    },
    "patch_size": [16, 16, 16],
    "prediction_type": "v",
}


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained 2-level U-Net on 16^3 patches (.safetensors + .json); outputs made non-zero."""
    torch.manual_seed(0)
    model = DiffusionModel.from_config(TINY)
    with torch.no_grad():
        for p in model.net.parameters():  # MONAI zero-initialises the output layer
            p.add_(0.01 * torch.randn_like(p))
    return save_model(model, tmp_path_factory.mktemp("model") / "tiny.safetensors")


@pytest.fixture(scope="session")
def small_quick_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """configs/bench/quick.yaml with its volume crop shrunk to 32 x 32 x 40 (same cases, same methods), on one
    thread (two OpenMP threads on a machine shared with other jobs can be 100 times slower), and with two
    posterior samples for inpainting."""
    raw: dict[str, Any] = yaml.safe_load(QUICK.read_text())
    raw["threads"] = 1
    for degradation in raw["degradations"]:
        if degradation["task"] == "inpaint":  # two posterior samples: exercises the uncertainty column
            degradation["medidiff"] = {**degradation.get("medidiff", {}), "samples": 2}
    for volume in raw["volumes"]:
        volume["path"] = str(REPO / volume["path"])
        volume["crop"] = [32, 32, 40]
    path = tmp_path_factory.mktemp("config") / "quick_small.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path
