"""Fixtures of the benchmark tests: a tiny untrained model and a shrunken copy of configs/bench/quick.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import build_tiny_model

from medidiff.nets.checkpoint import save_model

REPO = Path(__file__).resolve().parents[2]
QUICK = REPO / "configs" / "bench" / "quick.yaml"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:func:`helpers.build_tiny_model` with (8, 8) channels (smaller than the shared (8, 16)
    ``tiny_model_path``), saved as .safetensors + .json."""
    return save_model(
        build_tiny_model(channels=(8, 8)), tmp_path_factory.mktemp("model") / "tiny.safetensors"
    )


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
        volume["path"] = str((QUICK.parent / volume["path"]).resolve())  # relative to the config's folder
        volume["crop"] = [32, 32, 40]
    path = tmp_path_factory.mktemp("config") / "quick_small.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path
