"""MediDiff.py's panel-to-CLI mapping and its job's life cycle, on real MRML (see conftest.mrml).

The job tests run real subprocesses that stand in for ``medidiff restore`` (they print progress lines and
write real NRRD files or fail like the CLI), so polling, loading, cancel and clean-up run for real without
the cost of a restoration; test_slicer_mrml.py runs the real CLI.
"""

from __future__ import annotations

import sys
import textwrap
import time
import types
from pathlib import Path
from typing import Any

import pytest
from MediDiffLib.command import BACKENDS, DEVICES, build_restore_argv
from MediDiffLib.process import ProcessState
from MediDiffLib.workspace import Workspace
from test_slicer_mrml import parameters, volume


def argv_for(mrml: types.SimpleNamespace, catalog: Any, workspace: Workspace, **changes: Any) -> list[str]:
    params = parameters(mrml.module, **changes)
    restore = mrml.module.MediDiffLogic.restoreParameters(params, workspace, catalog)
    return build_restore_argv(restore, catalog, ["py", "-m", "medidiff"])[3:]


def test_panel_defaults_map_to_the_cli_defaults(
    mrml: types.SimpleNamespace, catalog: Any, tmp_path: Path
) -> None:
    ws = Workspace(tmp_path)
    assert argv_for(mrml, catalog, ws) == [
        "restore",
        str(ws.input_path),
        str(ws.output_path),
        "--task",
        "denoise",
        "--noise",
        "gaussian",
        "--sigma",
        "auto",
        "--seed",
        "0",
        "--device",
        "cpu",
    ]  # no --samples/--steps/--backend: the task's defaults and the backend come from medidiff itself


def test_panel_choices_map_to_cli_options(mrml: types.SimpleNamespace, catalog: Any, tmp_path: Path) -> None:
    m = mrml.module
    ws = Workspace(tmp_path)
    argv = argv_for(
        mrml,
        catalog,
        ws,
        noiseModel="rician",
        sigmaMode=m.SigmaMode.PERCENT,
        sigmaValue=7.5,
        steps=25,
        samples=3,
        computeUncertainty=True,
        seed=-1,
        device=m.Device.CUDA,
        backend=m.Backend.OPENVINO,
        modelPath=" /models/m.safetensors ",
    )
    assert argv[argv.index("--backend") + 1] == "openvino"
    assert argv[argv.index("--sigma") + 1] == "7.5%"
    assert argv[argv.index("--noise") + 1] == "rician"
    assert argv[argv.index("--steps") + 1] == "25"
    assert argv[argv.index("--samples") + 1] == "3"
    assert argv[argv.index("--uncertainty") + 1] == str(ws.uncertainty_path)
    assert argv[argv.index("--model") + 1] == "/models/m.safetensors"
    assert argv[argv.index("--device") + 1] == "cuda"
    assert "--seed" not in argv  # -1 is "random"
    value = argv_for(mrml, catalog, ws, sigmaMode=m.SigmaMode.VALUE, sigmaValue=12.0)
    assert value[value.index("--sigma") + 1] == "12"


def test_each_task_gets_only_its_options(mrml: types.SimpleNamespace, catalog: Any, tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    inpaint = argv_for(mrml, catalog, ws, task="inpaint", maskNode=object(), degradeBlur=True)
    assert inpaint[inpaint.index("--mask") + 1] == str(ws.mask_path)
    assert "--noise" not in inpaint and "--sigma" not in inpaint and "--degradation" not in inpaint
    restore = argv_for(
        mrml,
        catalog,
        ws,
        task="restore",
        degradeBias=False,
        degradeBlur=True,
        degradeSlices=True,
        targetSpacing=1,
    )
    assert restore[restore.index("--degradation") + 1] == "blur,thick-slices"
    assert restore[restore.index("--target-spacing") + 1] == "1"
    assert "--mask" not in restore and "--noise" not in restore
    no_slices = argv_for(mrml, catalog, ws, task="restore", targetSpacing=1)
    assert "--target-spacing" not in no_slices  # only meaningful with thick slices
    if "deblur" in catalog.names:
        deblur = argv_for(mrml, catalog, ws, task="deblur", fwhm=3.0)
        assert deblur[deblur.index("--fwhm") + 1] == "3"


def test_apply_is_refused_with_the_command_builders_reason(mrml: types.SimpleNamespace, catalog: Any) -> None:
    m = mrml.module
    logic = m.MediDiffLogic()
    node = volume(mrml)
    why = logic.whyNotApply
    assert why(parameters(m, inputVolume=node), catalog) is None
    assert why(parameters(m), catalog) == "Choose an input volume."
    assert why(parameters(m, inputVolume=node), None) is None  # not installed yet: Apply installs first
    assert why(parameters(m, inputVolume=node, task="inpaint"), catalog).startswith(
        "The inpaint task needs a mask"
    )
    assert why(parameters(m, inputVolume=node, task="inpaint", maskNode=node), catalog) is None
    no_kind = parameters(m, inputVolume=node, task="restore", degradeBias=False)
    assert "needs at least one degradation kind" in why(no_kind, catalog)
    uncertainty = parameters(m, inputVolume=node, computeUncertainty=True)
    assert "set samples to 2 or more" in why(uncertainty, catalog)
    assert (
        why(parameters(m, inputVolume=node, task="inpaint", maskNode=node, computeUncertainty=True), catalog)
        is None
    )


def test_the_panel_covers_the_registry(mrml: types.SimpleNamespace, catalog: Any) -> None:
    """Every degradation kind has a checkbox, every task can be set from the panel, devices agree."""
    m = mrml.module
    assert set(m.DEGRADATION_FIELDS) == set(catalog.degradations)
    assert catalog.panel_tasks() == catalog.tasks
    assert {d.value for d in m.Device} == set(DEVICES)
    assert {b.value for b in m.Backend} == set(BACKENDS)
    assert set(catalog.noise_models) <= set(m.NOISE_LABELS)
    for task in catalog.names:
        assert m.resultSuffix(task)
    for enum_type in (m.SigmaMode, m.Device):
        labels = [member.label() for member in enum_type]
        assert all(labels) and len(set(labels)) == len(labels)
    assert m._formatSeconds(75.4) == "1:15"


def test_logic_reads_the_installed_registry(mrml: types.SimpleNamespace, catalog: Any) -> None:
    logic = mrml.module.MediDiffLogic()
    assert logic.catalog() == catalog
    assert logic.source() is not None and logic.source().checkout is not None  # this checkout
    assert logic.dependencySummary() is None  # the dev venv has the editable medidiff and torch


# -- the job -----------------------------------------------------------------------------------------------

NRRD = (
    "NRRD0004\ntype: float\ndimension: 3\nspace: left-posterior-superior\nsizes: 2 2 2\n"
    "space directions: (1,0,0) (0,1,0) (0,0,2)\nkinds: domain domain domain\nendian: little\n"
    "encoding: raw\nspace origin: (0,0,0)\n\n"
)

WRITE_RESULTS = f"""
import pathlib, sys, time
folder = pathlib.Path(sys.argv[1])
for done in range(1, 4):
    print(f"medidiff-progress denoise {{done}}/3", file=sys.stderr, flush=True)
    time.sleep(0.05)
for name in ("output.nrrd", "uncertainty.nrrd"):
    (folder / name).write_bytes({NRRD!r}.encode() + bytes(32))
"""


def run_job(mrml: types.SimpleNamespace, tmp_path: Path, script: str, uncertainty: bool = False) -> Any:
    node = volume(mrml)
    transform = mrml.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "moved")
    node.SetAndObserveTransformNodeID(transform.GetID())
    workspace = Workspace.create(tmp_path)
    events: list[tuple[str, Any]] = []
    job = mrml.module.MediDiffJob(
        [sys.executable, "-c", textwrap.dedent(script), str(workspace.directory)],
        workspace,
        node,
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


def test_job_success_loads_results_and_cleans_up(mrml: types.SimpleNamespace, tmp_path: Path) -> None:
    job = run_job(mrml, tmp_path, WRITE_RESULTS, uncertainty=True)
    job.start()
    assert job.running and job.timer.active and job.timer.interval == 200
    drive(job)
    assert job.state is ProcessState.SUCCEEDED
    assert not job.timer.active
    assert [e for e in job.events if e[0] == "finished"] == [("finished", ProcessState.SUCCEEDED)]
    assert job.lastProgress is not None and job.lastProgress.stage == "denoise"
    assert job.outputVolume.GetName() == "T1 denoised"
    assert job.uncertaintyVolume.GetName() == "T1 denoised uncertainty"
    assert job.outputVolume.GetImageData().GetDimensions() == (2, 2, 2)
    # Results are detached from the temporary files and follow the input's transform.
    assert job.outputVolume.GetStorageNode() is None
    assert job.outputVolume.GetTransformNodeID() == job.inputVolume.GetTransformNodeID()
    assert not job.workspace.directory.exists()


def test_job_keeps_the_clis_warnings_and_notes(mrml: types.SimpleNamespace, tmp_path: Path) -> None:
    """A written result that failed medidiff's consistency check succeeds, with the warning kept for the
    status line (the exact lines the CLI prints: medidiff.cli.restore.report_notes)."""
    script = WRITE_RESULTS + textwrap.dedent(
        """
        print("medidiff: note: noise level from bright tissue (12.5): no air", file=sys.stderr)
        print("medidiff: warning: the result may be worse than the input: it removed more", file=sys.stderr)
        """
    )
    job = run_job(mrml, tmp_path, script)
    job.start()
    drive(job)
    assert job.state is ProcessState.SUCCEEDED
    assert job.warnings == ["the result may be worse than the input: it removed more"]
    assert job.notes == ["noise level from bright tissue (12.5): no air"]


def test_job_without_result_file_fails_clearly(mrml: types.SimpleNamespace, tmp_path: Path) -> None:
    job = run_job(mrml, tmp_path, "pass")
    job.start()
    drive(job)
    assert job.state is ProcessState.FAILED
    assert job.error.message.startswith("medidiff finished but wrote no result file")
    assert job.outputVolume is None
    assert not job.workspace.directory.exists()


def test_job_failure_carries_the_cli_message(mrml: types.SimpleNamespace, tmp_path: Path) -> None:
    script = "import sys; print('medidiff: error: cannot read input.nrrd', file=sys.stderr); sys.exit(2)"
    job = run_job(mrml, tmp_path, script)
    volumes = mrml.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
    job.start()
    drive(job)
    assert job.state is ProcessState.FAILED
    assert job.returncode == 2
    assert job.error.message == "medidiff could not restore the volume: cannot read input.nrrd"
    assert mrml.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == volumes


@pytest.mark.parametrize("wait", [False, True])
def test_job_cancel(mrml: types.SimpleNamespace, tmp_path: Path, wait: bool) -> None:
    script = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    job = run_job(mrml, tmp_path, script)
    job.start()
    job.timer.fire()
    started = time.monotonic()
    job.cancel(wait=wait)
    if not wait:  # the Cancel button: never blocks, even for a process that ignores SIGTERM
        assert time.monotonic() - started < 0.5
        assert job.running and job.cancelRequested
        drive(job, timeout_s=10)
    assert job.state is ProcessState.CANCELLED
    assert job.events[-1] == ("finished", ProcessState.CANCELLED)
    assert job.process.returncode is not None
    assert not job.timer.active
    assert not job.workspace.directory.exists()
    job.cancel()  # a second cancel (or a late timer tick) changes nothing
    job.timer.fire()
    assert [e for e in job.events if e[0] == "finished"] == [("finished", ProcessState.CANCELLED)]
