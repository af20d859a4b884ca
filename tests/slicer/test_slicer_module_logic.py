"""MediDiff.py's Slicer-independent logic, run against minimal stand-ins for the slicer, qt and vtk modules.

Slicer cannot be installed here. These stand-ins provide only the names MediDiff.py touches at import time
and in the code paths under test (parameter mapping, the job's poll/finish/cancel cycle with a real
subprocess), so the module's own code runs for real; what Slicer does itself (loading files, widgets) is
faked and recorded.
"""

from __future__ import annotations

import importlib.util
import sys
import textwrap
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from MediDiffLib.command import build_restore_argv
from MediDiffLib.process import ProcessState
from MediDiffLib.workspace import Workspace


class FakeTimer:
    """qt.QTimer stand-in: the test fires it by hand."""

    def __init__(self) -> None:
        self.interval = 0
        self.active = False
        self.slot: Callable[[], None] | None = None

    def setInterval(self, ms: int) -> None:
        self.interval = ms

    def connect(self, signal: str, slot: Callable[[], None]) -> None:
        assert signal == "timeout()"
        self.slot = slot

    def start(self) -> None:
        self.active = True

    def stop(self) -> None:
        self.active = False

    def fire(self) -> None:
        assert self.slot is not None
        self.slot()


class FakeNode:
    def __init__(self, name: str, transform: str | None = None) -> None:
        self.name = name
        self.transform = transform
        self.storage: object | None = "storage-node"

    def GetName(self) -> str:
        return self.name

    def GetTransformNodeID(self) -> str | None:
        return self.transform

    def SetAndObserveTransformNodeID(self, node_id: str | None) -> None:
        self.transform = node_id

    def GetStorageNode(self) -> object | None:
        return self.storage

    def SetAndObserveStorageNodeID(self, node_id: None) -> None:
        self.storage = node_id


class Base:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass


@pytest.fixture
def medidiff_module(module_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    """Import slicer/MediDiff/MediDiff.py with stand-in slicer/qt/vtk modules in sys.modules."""
    loaded: list[tuple[str, dict[str, Any]]] = []
    removed: list[object] = []

    def load_volume(path: str, properties: dict[str, Any]) -> FakeNode:
        loaded.append((path, properties))
        return FakeNode(properties["name"])

    slicer = types.ModuleType("slicer")
    for name in ("vtkMRMLLabelMapVolumeNode", "vtkMRMLScalarVolumeNode", "vtkMRMLSegmentationNode"):
        setattr(slicer, name, type(name, (), {}))
    slicer.util = types.SimpleNamespace(VTKObservationMixin=Base, loadVolume=load_volume)  # type: ignore[attr-defined]
    slicer.mrmlScene = types.SimpleNamespace(RemoveNode=removed.append)  # type: ignore[attr-defined]
    wrapper = types.ModuleType("slicer.parameterNodeWrapper")
    wrapper.parameterNodeWrapper = lambda cls: cls  # type: ignore[attr-defined]
    wrapper.WithinRange = lambda low, high: ("range", low, high)  # type: ignore[attr-defined]
    scripted = types.ModuleType("slicer.ScriptedLoadableModule")
    for name in ("ScriptedLoadableModule", "ScriptedLoadableModuleLogic", "ScriptedLoadableModuleTest"):
        setattr(scripted, name, type(name, (Base,), {}))
    scripted.ScriptedLoadableModuleWidget = type("ScriptedLoadableModuleWidget", (Base,), {})  # type: ignore[attr-defined]
    util_module = types.ModuleType("slicer.util")
    util_module.VTKObservationMixin = Base  # type: ignore[attr-defined]
    qt = types.ModuleType("qt")
    qt.QTimer = FakeTimer  # type: ignore[attr-defined]
    for name, module in {
        "slicer": slicer,
        "slicer.parameterNodeWrapper": wrapper,
        "slicer.ScriptedLoadableModule": scripted,
        "slicer.util": util_module,
        "qt": qt,
        "vtk": types.ModuleType("vtk"),
    }.items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location("MediDiff", module_dir / "MediDiff.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.loaded_volumes = loaded  # type: ignore[attr-defined]
    module.removed_nodes = removed  # type: ignore[attr-defined]
    yield module


def gui_parameters(module: types.ModuleType, **changes: Any) -> types.SimpleNamespace:
    """The parameter node's defaults as the GUI starts with them, plus ``changes``."""
    defaults = {
        "inputVolume": FakeNode("T1"),
        "task": module.Task.DENOISE,
        "maskNode": None,
        "degradeBias": True,
        "degradeBlur": False,
        "degradeSlices": False,
        "noiseModel": module.NoiseModel.GAUSSIAN,
        "sigmaMode": module.SigmaMode.AUTO,
        "sigmaValue": 5.0,
        "steps": 0,
        "samples": 1,
        "computeUncertainty": False,
        "seed": 0,
        "device": module.Device.AUTO,
        "modelPath": "",
    }
    defaults.update(changes)
    return types.SimpleNamespace(**defaults)


def argv_for(module: types.ModuleType, workspace: Workspace, **changes: Any) -> list[str]:
    parameters = gui_parameters(module, **changes)
    restore = module.MediDiffLogic.restoreParameters(
        parameters, workspace, parameters.task is module.Task.INPAINT
    )
    return build_restore_argv(restore, ["py", "-m", "medidiff"])[3:]


def test_gui_defaults_map_to_a_plain_denoise(medidiff_module: types.ModuleType, tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    argv = argv_for(medidiff_module, ws)
    assert argv == [
        "restore",
        str(ws.input_path),
        str(ws.output_path),
        "--task",
        "denoise",
        "--noise",
        "gaussian",
        "--sigma",
        "auto",
        "--samples",
        "1",
        "--seed",
        "0",
        "--device",
        "auto",
    ]


def test_gui_choices_map_to_cli_options(medidiff_module: types.ModuleType, tmp_path: Path) -> None:
    m = medidiff_module
    ws = Workspace(tmp_path)
    argv = argv_for(
        m,
        ws,
        noiseModel=m.NoiseModel.RICIAN,
        sigmaMode=m.SigmaMode.PERCENT,
        sigmaValue=7.5,
        steps=25,
        samples=3,
        computeUncertainty=True,
        seed=-1,
        device=m.Device.CUDA,
        modelPath=" /models/m.safetensors ",
    )
    assert argv[argv.index("--sigma") + 1] == "7.5%"
    assert argv[argv.index("--noise") + 1] == "rician"
    assert argv[argv.index("--steps") + 1] == "25"
    assert argv[argv.index("--uncertainty") + 1] == str(ws.uncertainty_path)
    assert argv[argv.index("--model") + 1] == "/models/m.safetensors"
    assert argv[argv.index("--device") + 1] == "cuda"
    assert "--seed" not in argv  # -1 is "random"
    value = argv_for(m, ws, sigmaMode=m.SigmaMode.VALUE, sigmaValue=12.0)
    assert value[value.index("--sigma") + 1] == "12"


def test_inpaint_and_restore_drop_the_other_tasks_options(
    medidiff_module: types.ModuleType, tmp_path: Path
) -> None:
    m = medidiff_module
    ws = Workspace(tmp_path)
    inpaint = argv_for(m, ws, task=m.Task.INPAINT, degradeBlur=True)
    assert inpaint[inpaint.index("--mask") + 1] == str(ws.mask_path)
    assert "--noise" not in inpaint and "--sigma" not in inpaint and "--degradation" not in inpaint
    restore = argv_for(m, ws, task=m.Task.RESTORE, degradeBias=False, degradeBlur=True, degradeSlices=True)
    assert restore[restore.index("--degradation") + 1] == "blur,slices"
    assert "--mask" not in restore and "--noise" not in restore


def test_apply_is_refused_with_the_reason(medidiff_module: types.ModuleType) -> None:
    m = medidiff_module
    why = m.MediDiffWidget._whyNotApply
    assert why(gui_parameters(m)) is None
    assert why(gui_parameters(m, inputVolume=None)) == "Choose an input volume."
    assert why(gui_parameters(m, task=m.Task.INPAINT)).startswith("The inpaint task needs a mask")
    assert why(gui_parameters(m, task=m.Task.INPAINT, maskNode=FakeNode("hole"))) is None
    no_kind = gui_parameters(m, task=m.Task.RESTORE, degradeBias=False)
    assert why(no_kind).startswith("The restore task needs at least one degradation kind")


def test_enum_labels_and_time_format(medidiff_module: types.ModuleType) -> None:
    m = medidiff_module
    for enum_type in (m.Task, m.NoiseModel, m.SigmaMode, m.Device):
        labels = [member.label() for member in enum_type]
        assert all(labels) and len(set(labels)) == len(labels)
    assert m._formatSeconds(75.4) == "1:15"
    assert set(m._TASK_SUFFIX) == set(m.Task)


def run_job(module: types.ModuleType, tmp_path: Path, script: str, uncertainty: bool = False) -> Any:
    workspace = Workspace.create(tmp_path)
    events: list[tuple[str, Any]] = []
    job = module.MediDiffJob(
        [sys.executable, "-c", textwrap.dedent(script), str(workspace.directory)],
        workspace,
        FakeNode("T1", transform="vtkMRMLLinearTransformNode1"),
        outputName="T1 denoised",
        uncertaintyName="T1 denoised uncertainty" if uncertainty else None,
        onProgress=lambda job, status: events.append(("progress", status.progress)),
        onFinished=lambda job: events.append(("finished", job.state)),
    )
    job.events = events
    return job


def drive(job: Any, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while job.running:
        assert time.monotonic() < deadline
        job.timer.fire()
        time.sleep(0.01)


WRITE_RESULTS = """
import pathlib, sys, time
folder = pathlib.Path(sys.argv[1])
for done in range(1, 4):
    print(f"medidiff-progress denoise {done}/3", file=sys.stderr, flush=True)
    time.sleep(0.05)
(folder / "output.nrrd").write_text("fake")
(folder / "uncertainty.nrrd").write_text("fake")
"""


def test_job_success_loads_results_and_cleans_up(medidiff_module: types.ModuleType, tmp_path: Path) -> None:
    job = run_job(medidiff_module, tmp_path, WRITE_RESULTS, uncertainty=True)
    job.start()
    assert job.running and job.timer.active and job.timer.interval == 200
    drive(job)
    assert job.state is ProcessState.SUCCEEDED
    assert not job.timer.active
    assert job.events[-1] == ("finished", ProcessState.SUCCEEDED)
    assert [e for e in job.events if e[0] == "finished"] == [job.events[-1]]  # called once
    assert job.lastProgress is not None and job.lastProgress.stage == "denoise"
    names = [props["name"] for _, props in medidiff_module.loaded_volumes]
    assert names == ["T1 denoised", "T1 denoised uncertainty"]
    assert all(props["show"] is False for _, props in medidiff_module.loaded_volumes)
    # Results are detached from the temporary files and follow the input's transform.
    assert job.outputVolume.GetStorageNode() is None
    assert medidiff_module.removed_nodes == ["storage-node", "storage-node"]
    assert job.outputVolume.GetTransformNodeID() == "vtkMRMLLinearTransformNode1"
    assert not job.workspace.directory.exists()


def test_job_without_result_file_fails_clearly(medidiff_module: types.ModuleType, tmp_path: Path) -> None:
    job = run_job(medidiff_module, tmp_path, "pass")
    job.start()
    drive(job)
    assert job.state is ProcessState.FAILED
    assert job.error.message.startswith("medidiff finished but wrote no result file")
    assert job.outputVolume is None
    assert not job.workspace.directory.exists()


def test_job_failure_carries_the_cli_message(medidiff_module: types.ModuleType, tmp_path: Path) -> None:
    script = "import sys; print('medidiff: error: cannot read input.nrrd', file=sys.stderr); sys.exit(2)"
    job = run_job(medidiff_module, tmp_path, script)
    job.start()
    drive(job)
    assert job.state is ProcessState.FAILED
    assert job.returncode == 2
    assert job.error.message == "medidiff could not restore the volume: cannot read input.nrrd"
    assert medidiff_module.loaded_volumes == []


def test_job_cancel(medidiff_module: types.ModuleType, tmp_path: Path) -> None:
    job = run_job(medidiff_module, tmp_path, "import time; time.sleep(60)")
    job.start()
    job.timer.fire()
    job.cancel()
    assert job.state is ProcessState.CANCELLED
    assert job.events[-1] == ("finished", ProcessState.CANCELLED)
    assert job.process.returncode is not None
    assert not job.timer.active
    assert not job.workspace.directory.exists()
    job.cancel()  # a second cancel (or a late timer tick) changes nothing
    job.timer.fire()
    assert [e for e in job.events if e[0] == "finished"] == [("finished", ProcessState.CANCELLED)]
