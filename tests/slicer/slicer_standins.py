"""What the MediDiff module needs from 3D Slicer beyond MRML, for tests that run its Logic on real MRML.

The MRML scene, nodes, storage nodes, segmentations, subject hierarchy and ``slicer.util`` are the real ones:
PyPI's ``slicer-core`` (Kitware's build of Slicer's MRML and module logics, without Qt). What it lacks is the
Qt application around them, so the tests provide, and only these:

- ``qt.QTimer``: PythonQt's timer (the tests fire it by hand);
- ``slicer.app``: ``temporaryPath``, ``majorVersion``, ``minorVersion``, ``processEvents()``;
- ``slicer.ScriptedLoadableModule``: the base classes; the Logic's ``getParameterNode`` mirrors Slicer's
  (Base/Python/slicer/ScriptedLoadableModule.py, commit ff36086f889aa30e3f439053772c4fafeb53495b) on the real
  scene;
- ``slicer.parameterNodeWrapper``: typed fields over the real parameter node (values kept in Python; the
  binding of the parameter node to widgets needs Qt and is not exercised here);
- the installers, with the signatures of Slicer's source (``REFERENCE_SIGNATURES``): a stand-in whose
  signature differs fails ``test_standins_match_slicer_signatures``.
"""

from __future__ import annotations

import inspect
import time
import types
import unittest
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

# Signatures of the Slicer APIs the module calls that slicer-core does not ship, copied from their sources:
# PyTorchUtils.PyTorchUtilsLogic.installTorch (github.com/fepegar/SlicerPyTorch, PyTorchUtils/PyTorchUtils.py)
# and pip_ensure (Slicer's Base/Python/slicer/pydeps.py, commit 2412a9d6a54411048f66cfbd1dd731ecf15406d9,
# where Slicer >= 5.11 has it; declining raises RuntimeError("User declined package installation")).
REFERENCE_SIGNATURES = {
    "installTorch": (
        "(self, askConfirmation=False, forceComputationBackend=None, torchVersionRequirement=None, "
        "torchvisionVersionRequirement=None)"
    ),
    "pip_ensure": (
        "(requirements, constraints=None, skip_packages=None, prompt_install=True, prompt_restart=True, "
        "requester=None, skip_in_testing=True, show_progress=True)"
    ),
}


class QTimer:
    """PythonQt's QTimer as the module uses it: setInterval, connect("timeout()", slot), start, stop.

    Tests fire it by hand (:meth:`fire`), or :meth:`App.processEvents` fires the started timers whose interval
    has elapsed, as Qt's event loop does.
    """

    started: ClassVar[list[QTimer]] = []

    def __init__(self) -> None:
        self.interval = 0
        self.active = False
        self.slot: Callable[[], None] | None = None
        self.last = 0.0

    def setInterval(self, ms: int) -> None:
        self.interval = ms

    def connect(self, signal: str, slot: Callable[[], None]) -> None:
        assert signal == "timeout()"
        self.slot = slot

    def start(self) -> None:
        self.active = True
        self.last = time.monotonic()
        QTimer.started.append(self)

    def stop(self) -> None:
        self.active = False
        if self in QTimer.started:
            QTimer.started.remove(self)

    def fire(self) -> None:
        assert self.slot is not None
        self.slot()


class App:
    """``slicer.app`` (qSlicerApplication) properties the module reads."""

    def __init__(self, temporary: Path, version: tuple[int, int] = (5, 10)) -> None:
        self.temporaryPath = str(temporary)
        self.majorVersion, self.minorVersion = version

    def processEvents(self) -> None:
        now = time.monotonic()
        for timer in list(QTimer.started):
            if timer.active and now - timer.last >= timer.interval / 1000.0:
                timer.last = now
                timer.fire()

    def testingEnabled(self) -> bool:
        return True


def scripted_loadable_module(slicer: Any) -> types.ModuleType:
    module = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModule:
        def __init__(self, parent: Any) -> None:
            self.parent = parent

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent: Any = None) -> None:
            self.parent = parent

    class ScriptedLoadableModuleLogic:
        def __init__(self, parent: Any = None) -> None:
            self.moduleName = self.__class__.__name__
            if self.moduleName.endswith("Logic"):
                self.moduleName = self.moduleName[:-5]
            self.isSingletonParameterNode = True

        def getParameterNode(self) -> Any:
            node = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
            if node:
                return node
            node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
            node.UnRegister(None)
            node.SetSingletonTag(self.moduleName)
            node.SetAttribute("ModuleName", self.moduleName)
            node.SetName(slicer.mrmlScene.GenerateUniqueName(self.moduleName))
            return slicer.mrmlScene.AddNode(node)

    module.ScriptedLoadableModule = ScriptedLoadableModule  # type: ignore[attr-defined]
    module.ScriptedLoadableModuleWidget = ScriptedLoadableModuleWidget  # type: ignore[attr-defined]
    module.ScriptedLoadableModuleLogic = ScriptedLoadableModuleLogic  # type: ignore[attr-defined]
    module.ScriptedLoadableModuleTest = unittest.TestCase  # type: ignore[attr-defined]
    return module


def parameterNodeWrapper(cls: type) -> type:
    """Typed fields over a vtkMRMLScriptedModuleNode, like Slicer's wrapper (values kept in Python, not
    serialised into the node; unknown fields refused; a field without a default starts as None)."""
    fields = dict(cls.__annotations__)
    defaults = {name: getattr(cls, name, None) for name in fields}
    values: dict[str, dict[str, Any]] = {}

    class Wrapped:
        def __init__(self, node: Any) -> None:
            object.__setattr__(self, "parameterNode", node)
            object.__setattr__(self, "_values", values.setdefault(node.GetID(), dict(defaults)))

        def __getattr__(self, name: str) -> Any:
            if name in fields:
                return self._values[name]
            raise AttributeError(name)

        def __setattr__(self, name: str, value: Any) -> None:
            if name not in fields:
                raise AttributeError(f"{cls.__name__} has no parameter {name!r}")
            self._values[name] = value

    Wrapped.__name__ = Wrapped.__qualname__ = cls.__name__
    Wrapped.__annotations__ = fields
    return Wrapped


def parameter_node_wrapper() -> types.ModuleType:
    module = types.ModuleType("slicer.parameterNodeWrapper")
    module.parameterNodeWrapper = parameterNodeWrapper  # type: ignore[attr-defined]
    module.WithinRange = lambda low, high: ("WithinRange", low, high)  # type: ignore[attr-defined]
    return module


class PyTorchUtilsLogic:
    """Stand-in for PyTorchUtils.PyTorchUtilsLogic: records the call, installs nothing."""

    calls: list[dict[str, Any]] = []  # noqa: RUF012
    result: Any = object()

    def installTorch(
        self,
        askConfirmation=False,
        forceComputationBackend=None,
        torchVersionRequirement=None,
        torchvisionVersionRequirement=None,
    ):
        PyTorchUtilsLogic.calls.append(
            {"askConfirmation": askConfirmation, "torchVersionRequirement": torchVersionRequirement}
        )
        return PyTorchUtilsLogic.result


def make_pip_ensure(calls: list[Any], decline: bool = False) -> Callable[..., Any]:
    """A ``pip_ensure`` with Slicer's signature that records its calls (and can decline like Slicer)."""

    def pip_ensure(
        requirements,
        constraints=None,
        skip_packages=None,
        prompt_install=True,
        prompt_restart=True,
        requester=None,
        skip_in_testing=True,
        show_progress=True,
    ):
        calls.append((list(requirements), requester))
        if decline:
            raise RuntimeError("User declined package installation")

    return pip_ensure


def signature_text(function: Callable[..., Any]) -> str:
    return str(inspect.signature(function))
