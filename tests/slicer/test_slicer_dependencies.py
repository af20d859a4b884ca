"""How the Slicer module finds and installs its dependencies, decided without Slicer."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from MediDiffLib.dependencies import (
    DependencyStatus,
    InstallMethod,
    StepKind,
    detect,
    find_source_checkout,
    install_method,
    medidiff_command,
    module_available,
    parse_slicer_version,
    plan_installation,
    python_executable,
    read_requirements,
    requirement_name,
    resolve_requirements,
)

MISSING_ALL = DependencyStatus(medidiff=False, torch=False, pytorch_utils=False)
MISSING_WITH_PYTORCH_EXTENSION = DependencyStatus(medidiff=False, torch=False, pytorch_utils=True)
ONLY_MEDIDIFF_MISSING = DependencyStatus(medidiff=False, torch=True, pytorch_utils=True)
READY = DependencyStatus(medidiff=True, torch=True, pytorch_utils=False)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5.10.0", (5, 10, 0)),
        ("5.11.0-2026-05-01", (5, 11, 0)),
        ("6.0", (6, 0, 0)),
        ((5, 8, 1), (5, 8, 1)),
        ([5, 11], (5, 11, 0)),
    ],
)
def test_parse_slicer_version(text: str | tuple[int, ...], expected: tuple[int, int, int]) -> None:
    assert parse_slicer_version(text) == expected


@pytest.mark.parametrize("bad", ["", "five", (5,)])
def test_parse_slicer_version_rejects_garbage(bad: str | tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        parse_slicer_version(bad)


@pytest.mark.parametrize(
    ("version", "method"),
    [
        ("5.6.2", InstallMethod.PIP_INSTALL),
        ("5.10.0", InstallMethod.PIP_INSTALL),
        ("5.11.0", InstallMethod.PIP_ENSURE),
        ("5.12.1", InstallMethod.PIP_ENSURE),
        ("6.0.0", InstallMethod.PIP_ENSURE),
    ],
)
def test_install_method_by_slicer_version(version: str, method: InstallMethod) -> None:
    assert install_method(version) is method


def test_detect_uses_find_spec_without_importing() -> None:
    present = {"medidiff", "PyTorchUtils"}
    status = detect(lambda name: object() if name in present else None)
    assert status == DependencyStatus(medidiff=True, torch=False, pytorch_utils=True)
    assert not status.ready
    assert status.missing == ("torch",)


def test_module_available_survives_broken_parents() -> None:
    def broken(name: str) -> object:
        raise ModuleNotFoundError(name)

    assert module_available("a.b", broken) is False
    assert module_available("json") is True
    assert module_available("surely_not_installed_medidiff_xyz") is False


def test_detect_in_this_environment() -> None:
    status = detect()
    assert status.medidiff and status.torch  # the dev venv has both
    assert "slicer" not in sys.modules


def test_python_executable_prefers_python_slicer() -> None:
    assert python_executable(lambda name: f"/slicer/bin/{name}", fallback="/usr/bin/python3") == (
        "/slicer/bin/PythonSlicer"
    )
    assert python_executable(lambda name: None, fallback="/usr/bin/python3") == "/usr/bin/python3"
    assert medidiff_command("/x/PythonSlicer") == ["/x/PythonSlicer", "-m", "medidiff"]


def test_nothing_to_install_when_ready() -> None:
    assert plan_installation("5.6.0", READY, ["medidiff>=0.1"]) == []


def test_old_slicer_asks_first_then_pip_installs() -> None:
    steps = plan_installation("5.8.1", MISSING_ALL, ["medidiff>=0.1", "psutil>=5"])
    assert [step.kind for step in steps] == [StepKind.CONFIRM, StepKind.PIP_INSTALL]
    assert "medidiff>=0.1" in steps[0].text and "Install them now?" in steps[0].text
    assert steps[1].requirements == ("medidiff>=0.1", "psutil>=5")


def test_old_slicer_with_pytorch_extension_installs_torch_without_asking_twice() -> None:
    steps = plan_installation("5.8.1", MISSING_WITH_PYTORCH_EXTENSION, ["medidiff>=0.1"])
    assert [step.kind for step in steps] == [StepKind.CONFIRM, StepKind.TORCH, StepKind.PIP_INSTALL]
    assert "PyTorch extension" in steps[0].text
    assert steps[1].ask is False  # the CONFIRM step already asked


def test_new_slicer_lets_pip_ensure_ask() -> None:
    steps = plan_installation("5.11.0", MISSING_WITH_PYTORCH_EXTENSION, ["medidiff>=0.1"])
    assert [step.kind for step in steps] == [StepKind.TORCH, StepKind.PIP_ENSURE]
    assert steps[0].ask is True
    assert steps[1].requirements == ("medidiff>=0.1",)
    steps = plan_installation("5.11.0", ONLY_MEDIDIFF_MISSING, ["medidiff>=0.1"])
    assert [step.kind for step in steps] == [StepKind.PIP_ENSURE]


def test_every_interactive_plan_asks_before_installing() -> None:
    for version in ("5.4.0", "5.10.2", "5.11.0", "6.1.0"):
        for status in (MISSING_ALL, MISSING_WITH_PYTORCH_EXTENSION, ONLY_MEDIDIFF_MISSING):
            first = plan_installation(version, status, ["medidiff"])[0]
            asks = first.kind in (StepKind.CONFIRM, StepKind.PIP_ENSURE) or (
                first.kind is StepKind.TORCH and first.ask
            )
            assert asks, (version, status, first)


def test_non_interactive_plan_never_prompts() -> None:
    steps = plan_installation("5.11.0", MISSING_WITH_PYTORCH_EXTENSION, ["medidiff"], interactive=False)
    assert [step.kind for step in steps] == [StepKind.TORCH, StepKind.PIP_INSTALL]
    assert steps[0].ask is False


def test_source_checkout_replaces_the_pypi_requirement(module_dir: Path, repo_root: Path) -> None:
    checkout = find_source_checkout(module_dir)
    assert checkout == repo_root
    resolved = resolve_requirements(["MediDiff>=0.1", "psutil>=5"], checkout)
    assert resolved == (f"medidiff @ {repo_root.resolve().as_uri()}", "psutil>=5")
    steps = plan_installation("5.8.0", MISSING_ALL, ["medidiff>=0.1"], source_checkout=checkout)
    assert steps[-1].requirements[0].startswith("medidiff @ file://")


def test_find_source_checkout_needs_a_medidiff_pyproject(tmp_path: Path) -> None:
    module = tmp_path / "slicer" / "MediDiff"
    module.mkdir(parents=True)
    assert find_source_checkout(module) is None
    (tmp_path / "medidiff").mkdir()
    (tmp_path / "medidiff" / "__init__.py").write_text("")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "other"\n')
    assert find_source_checkout(module) is None
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "medidiff"\nversion = "0.1.0"\n')
    assert find_source_checkout(module) == tmp_path.resolve()


def test_read_requirements_of_the_module(module_dir: Path, tmp_path: Path) -> None:
    requirements = read_requirements(module_dir / "Resources" / "requirements.txt")
    assert "medidiff" in [requirement_name(r) for r in requirements]
    sample = tmp_path / "requirements.txt"
    sample.write_text("# comment\n\nmedidiff>=0.1  # the CLI\n--extra-index-url https://x\npsutil\n")
    assert read_requirements(sample) == ["medidiff>=0.1", "psutil"]


def test_requirement_name() -> None:
    assert requirement_name("MediDiff[extra]>=0.1") == "medidiff"
    assert requirement_name("scikit_image ~= 0.22") == "scikit-image"
    with pytest.raises(ValueError):
        requirement_name(">=1")
