"""medidiff.tasks: the torch-free task registry (specs, defaults, option checks); the CLI refuses bad options
without torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from medidiff.errors import ConfigError
from medidiff.tasks import FLIPS, TASK_SPECS, TASKS, TaskOptions, get_spec, parse_degradations

# Runs in a fresh interpreter: this test process has imported torch long ago.
_REFUSALS = """
import argparse, sys
from medidiff.cli.restore import check_task_options
from medidiff.errors import ConfigError

base = dict(task="denoise", views=None, samples=None, uncertainty=None, params_out=None, model="default",
            mask=None, degradation=None, noise="gaussian", sigma="auto", target_spacing=None, fwhm=None,
            steps=None, quiet=True, backend="auto", device="auto")
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
    assert get_spec("denoise").views(None) == get_spec("denoise").defaults.views == 2
    assert get_spec("inpaint").views(None) == 1
    assert get_spec("restore").views(8) == len(FLIPS) == 8
    with pytest.raises(ConfigError, match="between 1 and 8"):
        get_spec("denoise").views(9)


def test_every_task_stays_within_the_evaluation_budget() -> None:
    """Issue 5: at most about 50 network evaluations per task by default (samples x steps x views)."""
    assert set(TASKS) == {"denoise", "inpaint", "restore", "deblur"}
    for spec in TASK_SPECS.get_all():
        chain = spec.defaults
        evaluations = chain.views if spec.name == "denoise" else chain.samples * chain.steps * chain.views
        assert evaluations <= 50, spec.name


@pytest.mark.parametrize(
    ("task", "options", "message"),
    [
        ("inpaint", {}, "--task inpaint needs --mask"),
        ("restore", {}, "--task restore needs --degradation bias|blur|thick-slices"),
        ("restore", {"degradation": "bias,warp"}, "--degradation must list some of"),
        ("deblur", {}, "--task deblur needs --fwhm"),
        ("deblur", {"fwhm": -2.0}, "--fwhm must be a positive width"),
        ("denoise", {"noise": "poisson"}, "unknown noise model 'poisson'"),
        ("denoise", {"samples": 0}, "--samples must be at least 1"),
        ("denoise", {"steps": 0}, "--steps must be at least 1"),
    ],
)
def test_each_spec_refuses_what_cannot_work(task: str, options: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError, match=message.replace("|", r"\|")):
        get_spec(task).check(TaskOptions(**options))


def test_params_out_is_only_for_tasks_that_fit_parameters() -> None:
    get_spec("restore").check(TaskOptions(degradation="bias"), params_out=True)
    with pytest.raises(ConfigError, match="--params-out is only for --task restore"):
        get_spec("deblur").check(TaskOptions(fwhm=3.0), params_out=True)


def test_old_spelling_of_thick_slices_is_an_alias() -> None:
    assert parse_degradations("bias, slices") == ["bias", "thick-slices"]
    assert parse_degradations(["thick-slices"]) == ["thick-slices"]


def test_every_spec_names_a_task_class_of_its_own_name() -> None:
    for spec in TASK_SPECS.get_all():
        assert spec.load().name == spec.name


def test_the_patch_path_uses_these_views() -> None:
    from medidiff.inference import patches

    assert patches.FLIPS == FLIPS
