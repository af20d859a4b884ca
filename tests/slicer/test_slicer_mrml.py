"""MediDiff.py's Logic on real MRML (PyPI slicer-core: Slicer's MRML and module logics without Qt).

Covered for real: volume nodes with an oblique grid written to NRRD (LPS in the file) and read back, a
real ``medidiff restore`` run started, polled and loaded back by the module's job into a node with the
input's exact geometry, transform and subject-hierarchy study; a segmentation exported as a mask on the
input's grid (as medidiff reads it); label-map checks; cancel. Not covered: the Qt panel and the parameter
node's binding to widgets (no Qt here); see docs/slicer.md, "What is tested where".
"""

from __future__ import annotations

import math
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from MediDiffLib.process import ProcessState


def oblique_ijk_to_ras() -> np.ndarray:
    """An oblique, anisotropic, shifted IJK-to-RAS matrix (30 degrees about a tilted axis)."""
    axis = np.array([1.0, 1.0, 0.3])
    axis /= np.linalg.norm(axis)
    angle = math.radians(30.0)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + math.sin(angle) * cross + (1 - math.cos(angle)) * cross @ cross
    matrix = np.eye(4)
    matrix[:3, :3] = rotation @ np.diag([0.9, 1.1, 1.7])
    matrix[:3, 3] = [12.5, -30.25, 7.0]
    return matrix


def phantom(shape_kji: tuple[int, int, int] = (16, 18, 20)) -> np.ndarray:
    k, j, i = np.meshgrid(*(np.linspace(-1.0, 1.0, n) for n in shape_kji), indexing="ij")
    clean = 100.0 + 800.0 * (i**2 + j**2 + k**2 < 0.4) + 150.0 * np.sin(3.0 * i)
    return (clean + np.random.default_rng(0).normal(0.0, 30.0, clean.shape)).astype(np.float32)


def ijk_to_ras(slicer: Any, node: Any) -> np.ndarray:
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def volume(mrml: types.SimpleNamespace, name: str = "T1", array: np.ndarray | None = None) -> Any:
    data = phantom() if array is None else array
    return mrml.slicer.util.addVolumeFromArray(data, ijkToRAS=oblique_ijk_to_ras(), name=name)


def ball_segmentation(mrml: types.SimpleNamespace, reference: Any, center_ijk: tuple[float, ...]) -> Any:
    """A segmentation with one ball, made as a user would (a closed surface converted to a labelmap)."""
    import vtk

    slicer = mrml.slicer
    # What Slicer's Segmentations module registers when it starts (slicer-core has no module start-up).
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    factory.RegisterConverterRule(slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule())
    factory.RegisterConverterRule(slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule())
    segmentation = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "hole")
    segmentation.CreateDefaultDisplayNodes()
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(reference)
    center = oblique_ijk_to_ras() @ np.array([*center_ijk, 1.0])
    sphere = vtk.vtkSphereSource()
    sphere.SetCenter(*center[:3])
    sphere.SetRadius(3.5)
    sphere.SetThetaResolution(32)
    sphere.SetPhiResolution(32)
    sphere.Update()
    segmentation.AddSegmentFromClosedSurfaceRepresentation(sphere.GetOutput(), "hole", [1.0, 0.0, 0.0])
    return segmentation


def parameters(module: types.ModuleType, **changes: Any) -> types.SimpleNamespace:
    """The parameter node's fields with the panel's defaults, plus ``changes``."""
    fields = {
        "inputVolume": None,
        "task": "denoise",
        "maskNode": None,
        "degradeBias": True,
        "degradeBlur": False,
        "degradeSlices": False,
        "targetSpacing": 0.0,
        "fwhm": 0.0,
        "noiseModel": "gaussian",
        "sigmaMode": module.SigmaMode.AUTO,
        "sigmaValue": 5.0,
        "steps": 0,
        "samples": 0,
        "computeUncertainty": False,
        "seed": 0,
        "device": module.Device.CPU,
        "backend": module.Backend.AUTO,
        "modelPath": "",
    }
    fields.update(changes)
    return types.SimpleNamespace(**fields)


def drive(job: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while job.running:
        if time.monotonic() > deadline:
            job.cancel(wait=True)
            pytest.fail(f"medidiff did not finish within {timeout_s} s")
        job.timer.fire()
        time.sleep(0.05)


# -- geometry through files --------------------------------------------------------------------------------


def test_oblique_volume_goes_to_nrrd_in_lps_and_medidiff_reads_the_same_grid(
    mrml: types.SimpleNamespace, tmp_path: Path
) -> None:
    import medidiff

    node = volume(mrml)
    path = tmp_path / "input.nrrd"
    mrml.module.MediDiffLogic.writeVolume(node, path)
    header = path.read_bytes().split(b"\n\n", 1)[0].decode()
    assert "space: left-posterior-superior" in header
    assert node.GetStorageNode() is None  # the node's own storage is untouched
    ras = ijk_to_ras(mrml.slicer, node)
    read = medidiff.read_volume(str(path))
    np.testing.assert_allclose(read.affine, ras, atol=1e-5)  # medidiff's RAS affine is Slicer's IJKToRAS
    np.testing.assert_array_equal(
        np.asarray(read.data), mrml.slicer.util.arrayFromVolume(node).transpose(2, 1, 0)
    )
    back = mrml.module.MediDiffLogic.readVolume(path, "back")
    np.testing.assert_allclose(ijk_to_ras(mrml.slicer, back), ras, atol=1e-9)
    assert back.GetStorageNode() is None and back.GetDisplayNode() is not None


def test_unreadable_result_is_an_error_and_leaves_no_node(
    mrml: types.SimpleNamespace, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.nrrd"
    bad.write_text("not a nrrd")
    before = mrml.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
    with pytest.raises(mrml.module.errors.ProcessError, match="could not load the result file"):
        mrml.module.MediDiffLogic.readVolume(bad, "bad")
    assert mrml.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == before


# -- masks -------------------------------------------------------------------------------------------------


def test_segmentation_is_exported_on_the_input_grid(mrml: types.SimpleNamespace, tmp_path: Path) -> None:
    import medidiff

    logic = mrml.module.MediDiffLogic()
    node = volume(mrml)
    segmentation = ball_segmentation(mrml, node, (10.0, 9.0, 8.0))
    labelmap, temporary = logic.maskLabelmap(segmentation, node)
    assert temporary
    geometry = mrml.module.checks.geometry_difference(logic.geometryOf(node), logic.geometryOf(labelmap))
    assert geometry is None
    mask_kji = mrml.slicer.util.arrayFromVolume(labelmap) > 0
    assert mask_kji[8, 9, 10] and 0 < mask_kji.sum() < mask_kji.size // 4
    mrml.scene.RemoveNode(labelmap)

    path = tmp_path / "mask.nrrd"
    logic.writeMask(segmentation, node, path)
    assert mrml.scene.GetNumberOfNodesByClass("vtkMRMLLabelMapVolumeNode") == 0  # the temporary one is gone
    logic.writeVolume(node, tmp_path / "input.nrrd")
    mask = medidiff.read_volume(str(path))
    image = medidiff.read_volume(str(tmp_path / "input.nrrd"))
    np.testing.assert_allclose(mask.affine, image.affine, atol=1e-5)
    assert np.asarray(mask.data).shape == np.asarray(image.data).shape
    assert np.asarray(mask.data)[10, 9, 8] > 0


def test_empty_segmentation_and_mismatched_label_maps_are_refused(mrml: types.SimpleNamespace) -> None:
    module = mrml.module
    logic = module.MediDiffLogic()
    node = volume(mrml)
    empty = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "nothing")
    with pytest.raises(module.errors.MaskError, match="is empty"):
        logic.maskLabelmap(empty, node)
    # A segment whose labelmap cannot be made (no conversion path): the export reports success with no
    # voxels, which must read as an empty mask, not crash.
    empty.GetSegmentation().AddEmptySegment("void")
    with pytest.raises(module.errors.MaskError, match="is empty"):
        logic.maskLabelmap(empty, node)
    assert mrml.scene.GetNumberOfNodesByClass("vtkMRMLLabelMapVolumeNode") == 0
    labels = (phantom() > 500).astype(np.uint8)
    shifted = mrml.slicer.util.addVolumeFromArray(
        labels, name="shifted", nodeClassName="vtkMRMLLabelMapVolumeNode"
    )
    with pytest.raises(module.errors.MaskError, match="does not have the geometry"):
        logic.maskLabelmap(shifted, node)
    aligned = mrml.slicer.util.addVolumeFromArray(
        labels, ijkToRAS=oblique_ijk_to_ras(), name="aligned", nodeClassName="vtkMRMLLabelMapVolumeNode"
    )
    assert logic.maskLabelmap(aligned, node) == (aligned, False)
    with pytest.raises(module.errors.InputVolumeError, match="is a label map"):
        logic.checkInputVolume(aligned)


# -- a real restoration through the module's job -----------------------------------------------------------


def test_inpaint_round_trip_keeps_the_geometry_and_lands_in_the_study(mrml: types.SimpleNamespace) -> None:
    """Oblique volume + segmentation -> files -> `medidiff restore --task inpaint` -> a new node on the same
    grid, under the same transform, in the input's study; voxels outside the mask unchanged."""
    slicer, module = mrml.slicer, mrml.module
    node = volume(mrml)
    transform = mrml.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "moved")
    node.SetAndObserveTransformNodeID(transform.GetID())
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(mrml.scene)
    patient = shNode.CreateSubjectItem(shNode.GetSceneItemID(), "Patient")
    study = shNode.CreateStudyItem(patient, "Study")
    shNode.CreateItem(study, node)
    segmentation = ball_segmentation(mrml, node, (10.0, 9.0, 8.0))

    logic = module.MediDiffLogic()
    finished: list[Any] = []
    params = parameters(module, inputVolume=node, task="inpaint", maskNode=segmentation, steps=2, samples=1)
    job = logic.startRestoration(params, onFinished=finished.append)
    assert job.argv[1:4] == ["-m", "medidiff", "restore"]
    drive(job, timeout_s=300)
    details = "" if job.error is None else f"{job.error.message}\n{job.error.details}"
    assert job.state is ProcessState.SUCCEEDED, details
    assert finished == [job]
    output = job.outputVolume
    assert output.GetName() == "T1 inpainted"
    np.testing.assert_allclose(ijk_to_ras(slicer, output), ijk_to_ras(slicer, node), atol=1e-6)
    assert output.GetTransformNodeID() == transform.GetID()
    assert shNode.GetItemParent(shNode.GetItemByDataNode(output)) == study
    assert output.GetStorageNode() is None
    assert not job.workspace.directory.exists()
    before, after = slicer.util.arrayFromVolume(node), slicer.util.arrayFromVolume(output)
    labelmap, _ = logic.maskLabelmap(segmentation, node)
    missing = slicer.util.arrayFromVolume(labelmap) > 0
    np.testing.assert_allclose(after[~missing], before[~missing], rtol=0, atol=1e-3 * float(np.ptp(before)))
    assert np.isfinite(after).all()


def test_cancel_returns_at_once_and_adds_nothing(mrml: types.SimpleNamespace) -> None:
    module = mrml.module
    node = volume(mrml)
    logic = module.MediDiffLogic()
    finished: list[Any] = []
    job = logic.startRestoration(
        parameters(module, inputVolume=node, steps=500, samples=8), onFinished=finished.append
    )
    volumes = mrml.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
    started = time.monotonic()
    job.cancel()
    assert time.monotonic() - started < 0.5  # the GUI is never blocked
    assert job.cancelRequested
    drive(job, timeout_s=30)
    assert finished == [job]
    assert job.state is ProcessState.CANCELLED
    assert job.outputVolume is None
    assert not job.workspace.directory.exists()
    assert mrml.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == volumes


def test_options_are_checked_before_anything_is_written(mrml: types.SimpleNamespace) -> None:
    module = mrml.module
    node = volume(mrml)
    logic = module.MediDiffLogic()
    before = set(Path(mrml.app.temporaryPath).glob("*")) if Path(mrml.app.temporaryPath).exists() else set()
    with pytest.raises(module.errors.ParameterError, match="needs a mask"):
        logic.startRestoration(parameters(module, inputVolume=node, task="inpaint"))
    after = set(Path(mrml.app.temporaryPath).glob("*"))
    assert after == before  # the workspace was removed again
    with pytest.raises(module.errors.InputVolumeError, match="Choose an input volume"):
        logic.startRestoration(parameters(module, inputVolume=None))


def test_parameter_node_lives_in_the_scene(mrml: types.SimpleNamespace) -> None:
    logic = mrml.module.MediDiffLogic()
    node = logic.__class__.__mro__[1].getParameterNode(logic)  # the base class's (unwrapped) node
    assert node.GetClassName() == "vtkMRMLScriptedModuleNode"
    assert node.GetAttribute("ModuleName") == "MediDiff"
    assert logic.__class__.__mro__[1].getParameterNode(logic) is node  # a singleton


def test_the_modules_own_self_test_runs_on_mrml(mrml: types.SimpleNamespace) -> None:
    """MediDiffTest (what "Reload and Test" runs in Slicer): real tiny restorations, here on slicer-core."""
    slicer = mrml.slicer
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()  # done by Slicer's Segmentations module
    factory.RegisterConverterRule(slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule())
    factory.RegisterConverterRule(slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule())
    test = mrml.module.MediDiffTest("runTest")
    test.runTest()


def test_the_uncertainty_map_gets_the_cold_to_hot_colours(mrml: types.SimpleNamespace) -> None:
    """A std map is shown with Slicer's ColdToHotRainbow table, windowed from 0 to its 99th percentile; in a
    scene without that table (no colour module) the grey display is kept and nothing fails."""
    slicer, module = mrml.slicer, mrml.module
    std = volume(mrml)
    std.CreateDefaultDisplayNodes()
    assert module.MediDiffLogic.showAsUncertainty(std) is False
    colors = slicer.mrmlScene.CreateNodeByClass("vtkMRMLColorTableNode")
    colors.SetTypeToRainbow()
    colors.SetSingletonTag("FileColdToHotRainbow.txt")  # a singleton's ID is its class + tag, as in Slicer
    slicer.mrmlScene.AddNode(colors)
    colors.UnRegister(None)
    assert module.MediDiffLogic.showAsUncertainty(std) is True
    display = std.GetDisplayNode()
    assert display.GetColorNodeID() == module.MediDiffLogic.UNCERTAINTY_COLORS
    values = slicer.util.arrayFromVolume(std)
    assert display.GetWindowLevelMin() == pytest.approx(0.0)
    assert display.GetWindowLevelMax() == pytest.approx(float(np.percentile(values, 99)), rel=1e-6)
