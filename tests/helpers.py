"""Plain helpers shared by test modules and conftests: a tiny untrained model, and CLI runs side by side.

Fixtures live in conftest.py; this module holds what tests call directly. Import it as ``helpers``: pytest
puts tests/ on sys.path when it loads tests/conftest.py (no __init__.py, the default "prepend" import mode).
Nothing heavy is imported at module level.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medidiff.nets.model import DiffusionModel

Args = Sequence[str | os.PathLike[str]]


def tiny_model_config(channels: Sequence[int] = (8, 16)) -> dict[str, Any]:
    """A fresh model config: a 2-level U-Net (one res block each, no attention, 8 groups) on 16^3 patches,
    predicting v."""
    return {
        "unet": {
            "channels": list(channels),
            "num_res_blocks": 1,
            "attention_levels": [False, False],
            "norm_num_groups": 8,
        },
        "patch_size": [16, 16, 16],
        "prediction_type": "v",
    }


def build_tiny_model(seed: int = 0, channels: Sequence[int] = (8, 16)) -> DiffusionModel:
    """An untrained :func:`tiny_model_config` model in eval mode, built after ``torch.manual_seed(seed)``.

    Every weight is nudged by 0.01 N(0, 1): MONAI zero-initialises the output layer, which would make every
    prediction zero and the tests that compare outputs trivial.
    """
    import torch

    from medidiff.nets.model import DiffusionModel

    torch.manual_seed(seed)
    model = DiffusionModel.from_config(tiny_model_config(channels))
    with torch.no_grad():
        for p in model.net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model.eval()


def start_medidiff(
    commands: Mapping[str, Args], env: Mapping[str, str], cwd: Path | None = None
) -> dict[str, subprocess.Popen[str]]:
    """Start ``python -m medidiff ARGS`` for every named argument list at once, without waiting.

    Each run pays ~3 s of torch/MONAI imports; started side by side, a module's runs cost about one.

    Args:
        commands: name -> arguments after ``python -m medidiff``.
        env: the subprocesses' environment (the ``medidiff_env`` fixture).
        cwd: their working directory (default: this process's).

    Returns:
        name -> the running process, stdout and stderr piped as text; collect them with :func:`wait_all`.
    """
    return {
        name: subprocess.Popen(
            [sys.executable, "-m", "medidiff", *map(str, args)],
            cwd=cwd,
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, args in commands.items()
    }


def wait_all(
    running: Mapping[str, subprocess.Popen[str]], timeout: float = 300
) -> dict[str, subprocess.CompletedProcess[str]]:
    """Wait for every process of :func:`start_medidiff`; returns name -> completed process (text output)."""
    done = {}
    for name, popen in running.items():
        stdout, stderr = popen.communicate(timeout=timeout)
        done[name] = subprocess.CompletedProcess(popen.args, popen.returncode, stdout, stderr)
    return done


def run_side_by_side(
    commands: Mapping[str, Args], env: Mapping[str, str], cwd: Path | None = None
) -> dict[str, subprocess.CompletedProcess[str]]:
    """:func:`start_medidiff` then :func:`wait_all`: name -> completed ``python -m medidiff ARGS``."""
    return wait_all(start_medidiff(commands, env, cwd))
