"""The module's installer calls, run with stand-ins whose signatures are Slicer's (slicer_standins).

slicer-core ships the real ``slicer.util`` (its pip_install and dialogs are checked against it); Slicer's
``pip_ensure`` and the PyTorch extension's ``installTorch`` are stand-ins with their sources' signatures.
"""

from __future__ import annotations

import inspect
import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import slicer_standins as standins
from MediDiffLib import dependencies
from MediDiffLib.dependencies import DependencyStatus, Installed, InstallStep, StepKind


def test_standins_match_slicer_signatures(mrml: types.SimpleNamespace) -> None:
    assert (
        standins.signature_text(standins.PyTorchUtilsLogic.installTorch)
        == standins.REFERENCE_SIGNATURES["installTorch"]
    )
    pip_ensure = standins.make_pip_ensure([])
    assert standins.signature_text(pip_ensure) == standins.REFERENCE_SIGNATURES["pip_ensure"]
    # The real slicer.util (slicer-core) accepts the module's calls.
    util = mrml.slicer.util
    inspect.signature(util.pip_install).bind(["--force-reinstall", "--no-deps", "x.whl"])
    inspect.signature(util.confirmOkCancelDisplay).bind("text", windowTitle="MediDiff")
    inspect.signature(util.errorDisplay).bind("text", windowTitle="MediDiff", detailedText="details")
    inspect.signature(util.setSliceViewerLayers).bind(background=None, fit=True)
    inspect.signature(util.addVolumeFromArray).bind(None, ijkToRAS=None, name="n", nodeClassName=None)


@pytest.fixture
def installers(mrml: types.SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """Record every installer call; a pip_ensure in slicer.packaging; PyTorchUtils importable."""
    record = types.SimpleNamespace(pip_install=[], confirm=[], pip_ensure=[], answer=True)
    monkeypatch.setattr(mrml.slicer.util, "pip_install", lambda args, **kw: record.pip_install.append(args))

    def confirm(text: str, windowTitle: str | None = None, parent: Any = None, **kwargs: Any) -> bool:
        record.confirm.append(text)
        return record.answer

    monkeypatch.setattr(mrml.slicer.util, "confirmOkCancelDisplay", confirm)
    packaging = types.ModuleType("slicer.packaging")
    packaging.pip_ensure = standins.make_pip_ensure(record.pip_ensure)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "slicer.packaging", packaging)
    monkeypatch.setitem(sys.modules, "slicer.pydeps", None)  # not in this Slicer: import fails
    torch_utils = types.ModuleType("PyTorchUtils")
    torch_utils.PyTorchUtilsLogic = standins.PyTorchUtilsLogic  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "PyTorchUtils", torch_utils)
    standins.PyTorchUtilsLogic.calls = []
    standins.PyTorchUtilsLogic.result = object()
    record.packaging = packaging
    return record


def test_pip_ensure_is_found_by_looking_not_by_version(mrml: types.SimpleNamespace, installers: Any) -> None:
    logic = mrml.module.MediDiffLogic
    assert logic._pipEnsure() is installers.packaging.pip_ensure
    del installers.packaging.pip_ensure
    assert logic._pipEnsure() is None  # e.g. Slicer 5.10: pip_install and the module's own question


def test_each_step_calls_slicer_as_documented(mrml: types.SimpleNamespace, installers: Any) -> None:
    logic = mrml.module.MediDiffLogic()
    run = logic._runInstallStep
    assert run(InstallStep(StepKind.CONFIRM, text="Install?")) is True
    installers.answer = False
    assert run(InstallStep(StepKind.CONFIRM, text="Install?")) is False
    assert installers.confirm == ["Install?", "Install?"]
    assert (
        run(InstallStep(StepKind.PIP_INSTALL, arguments=("--force-reinstall", "--no-deps", "x.whl"))) is True
    )
    assert installers.pip_install == [["--force-reinstall", "--no-deps", "x.whl"]]
    requirement = "medidiff @ file:///ext/medidiff-0.1.0-py3-none-any.whl#sha256=" + "ab" * 32
    assert run(InstallStep(StepKind.PIP_ENSURE, arguments=(requirement, "psutil>=5.9"))) is True
    (requirements, requester) = installers.pip_ensure[0]
    assert [str(r) for r in requirements] == [requirement, "psutil>=5.9"] and requester == "MediDiff"
    assert run(InstallStep(StepKind.TORCH, ask=True, requirement=">=2.2")) is True
    assert standins.PyTorchUtilsLogic.calls == [{"askConfirmation": True, "torchVersionRequirement": ">=2.2"}]


def test_declining_is_a_no_not_a_failure(mrml: types.SimpleNamespace, installers: Any) -> None:
    """Slicer's pip_ensure raises when the user declines: the module must read it as "no"."""
    installers.packaging.pip_ensure = standins.make_pip_ensure(installers.pip_ensure, decline=True)
    logic = mrml.module.MediDiffLogic()
    assert logic._runInstallStep(InstallStep(StepKind.PIP_ENSURE, arguments=("psutil",))) is False
    standins.PyTorchUtilsLogic.result = None  # the PyTorch extension's own dialog answered Cancel
    assert logic._runInstallStep(InstallStep(StepKind.TORCH, ask=True)) is False
    with pytest.raises(mrml.module.errors.DependencyError, match="PyTorch could not be installed"):
        logic._runInstallStep(InstallStep(StepKind.TORCH, ask=False))


def test_install_failures_carry_the_reason(
    mrml: types.SimpleNamespace, installers: Any, monkeypatch: Any
) -> None:
    def failing(args: Any, **kwargs: Any) -> None:
        raise RuntimeError("pip exited with 1")

    monkeypatch.setattr(mrml.slicer.util, "pip_install", failing)
    with pytest.raises(
        mrml.module.errors.DependencyError, match="Installing the dependencies failed: pip exited"
    ):
        mrml.module.MediDiffLogic()._runInstallStep(InstallStep(StepKind.PIP_INSTALL, arguments=("x",)))


def fake_payload_module(tmp_path: Path) -> Path:
    folder = tmp_path / "Resources" / "MediDiffPayload"
    folder.mkdir(parents=True)
    (folder / "medidiff-0.1.0-py3-none-any.whl").write_bytes(b"wheel")
    manifest = {
        "version": "0.1.0",
        "wheel": "medidiff-0.1.0-py3-none-any.whl",
        "sha256": "ab" * 32,
        "requires_python": ">=3.10",
        "torch_requirement": ">=2.2",
    }
    (folder / "medidiff-payload.json").write_text(json.dumps(manifest))
    (tmp_path / "Resources" / "requirements.txt").write_text("psutil>=5.9\n")
    return tmp_path


def test_first_apply_installs_from_the_payload(
    mrml: types.SimpleNamespace, installers: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = DependencyStatus(None, None, None, False, True, ("psutil>=5.9",))
    ready = DependencyStatus(Installed("0.1.0", sha256="ab" * 32), None, "2.13.0", True, True)
    answers = [missing, ready]
    monkeypatch.setattr(dependencies, "detect", lambda source, extras=(), **kw: answers.pop(0))
    logic = mrml.module.MediDiffLogic()
    logic.moduleDir = fake_payload_module(tmp_path)
    assert logic.ensureDependencies(interactive=True) is True
    assert standins.PyTorchUtilsLogic.calls == [{"askConfirmation": True, "torchVersionRequirement": ">=2.2"}]
    (requirements, _) = installers.pip_ensure[0]
    assert str(requirements[0]).startswith("medidiff @ file://") and str(requirements[0]).endswith("ab" * 32)
    assert installers.pip_install == []  # nothing named from an index


def test_declining_the_first_install_reports_a_decline(
    mrml: types.SimpleNamespace, installers: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = DependencyStatus(None, None, "2.13.0", True, True)
    monkeypatch.setattr(dependencies, "detect", lambda source, extras=(), **kw: missing)
    installers.packaging.pip_ensure = standins.make_pip_ensure(installers.pip_ensure, decline=True)
    logic = mrml.module.MediDiffLogic()
    logic.moduleDir = fake_payload_module(tmp_path)
    assert logic.ensureDependencies(interactive=True) is False  # "not installed, nothing was run"


def test_ready_checkout_installs_nothing(mrml: types.SimpleNamespace, installers: Any) -> None:
    assert mrml.module.MediDiffLogic().ensureDependencies(interactive=True) is True
    assert installers.pip_install == [] and installers.pip_ensure == [] and installers.confirm == []


def test_old_python_gets_one_message_naming_the_slicer(mrml: types.SimpleNamespace, monkeypatch: Any) -> None:
    old = types.SimpleNamespace(version_info=(3, 9, 10), modules=sys.modules)
    monkeypatch.setattr(mrml.module, "sys", old)
    logic = mrml.module.MediDiffLogic()
    with pytest.raises(mrml.module.errors.DependencyError, match=r"needs 3D Slicer 5\.10 or newer"):
        logic.ensureDependencies(interactive=True)
    assert "Python 3.9.10" in logic.dependencySummary()
