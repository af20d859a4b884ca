"""medidiff.inference.defaults: torch-free task defaults; the CLI refuses bad options without torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from medidiff.errors import ConfigError
from medidiff.inference import defaults

# Runs in a fresh interpreter: this test process has imported torch long ago.
_REFUSALS = """
import argparse, sys
from medidiff.cli.restore import check_task_options
from medidiff.errors import ConfigError

base = dict(task="denoise", views=None, samples=None, uncertainty=None, params_out=None, model="default",
            mask=None, degradation=None)
for change in ({"views": 9}, {"views": 0}, {"uncertainty": "std.nii.gz"}, {"task": "restore", "samples": 1,
                                                                       "uncertainty": "std.nii.gz",
                                                                       "degradation": "bias"}):
    try:
        check_task_options(argparse.Namespace(**{**base, **change}))
    except ConfigError as error:
        print(error)
    else:
        print("accepted", change)
check_task_options(argparse.Namespace(**{**base, "views": 8}))
print("torch imported:", "torch" in sys.modules)
"""


def test_cli_refuses_bad_views_and_uncertainty_before_importing_torch() -> None:
    done = subprocess.run([sys.executable, "-c", _REFUSALS], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:2] == ["--views must be between 1 and 8, got 9", "--views must be between 1 and 8, got 0"]
    assert all("--uncertainty needs --samples 2" in line for line in lines[2:4]), lines
    assert lines[4] == "torch imported: False"


def test_views_resolve_to_the_task_default_or_refuse() -> None:
    assert defaults.resolve_views("denoise", None) == defaults.DEFAULTS["denoise"].views == 2
    assert defaults.resolve_views("inpaint", None) == 1
    assert defaults.resolve_views("restore", 8) == len(defaults.FLIPS) == 8
    with pytest.raises(ConfigError, match="between 1 and 8"):
        defaults.resolve_views("denoise", 9)


def test_every_task_stays_within_the_evaluation_budget() -> None:
    """Issue 5: at most about 50 network evaluations per task by default (samples x steps x views)."""
    assert set(defaults.DEFAULTS) == set(defaults.TASKS)
    for task, chain in defaults.DEFAULTS.items():
        evaluations = chain.views if task == "denoise" else chain.samples * chain.steps * chain.views
        assert evaluations <= 50, task


def test_the_pipeline_and_the_patch_path_use_these_values() -> None:
    from medidiff.inference import patches, pipeline

    assert pipeline.DEFAULTS is defaults.DEFAULTS and patches.FLIPS is defaults.FLIPS
    assert pipeline.start_ratio("restore", ["slices"]) == defaults.SLICES_START_RATIO
