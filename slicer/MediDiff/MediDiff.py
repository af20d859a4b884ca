"""3D Slicer module "MediDiff Restoration": restore the selected volume with medidiff without freezing Slicer.

Slicer's scripted-module layout: the Module, ParameterNode, Widget, Logic and Test classes live in this file.
Everything that does not need Slicer (command line, background process, dependency decisions, checks,
messages, the task catalog) is in ``MediDiffLib`` and unit-tested with plain pytest (tests/slicer); the
Logic's MRML code is tested against Kitware's MRML libraries (PyPI ``slicer-core``). The restoration runs as
a ``medidiff restore`` process; volumes travel through temporary NRRD files, which carry their geometry, so
there is no affine code here. Task names, defaults and value lists come from medidiff's own registry.
"""

# No `from __future__ import annotations` in this file: slicer.parameterNodeWrapper reads the ParameterNode's
# annotations at runtime and needs real types, not strings.

import enum
import importlib
import logging
import os
import shlex
import sys
import time
import traceback
from pathlib import Path
from typing import Annotated, Union

import numpy as np
import qt
import vtk
from MediDiffLib import catalog as catalogLib
from MediDiffLib import checks, dependencies, errors
from MediDiffLib.command import RestoreParameters, build_restore_argv, validate
from MediDiffLib.process import BackgroundProcess, ProcessState, ProcessStatus
from MediDiffLib.workspace import Workspace
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

import slicer
from slicer import vtkMRMLLabelMapVolumeNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode

#
# MediDiff
#


class MediDiff(ScriptedLoadableModule):
    """Module description shown in Slicer's module list and help panel."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "MediDiff Restoration"
        # Next to Slicer's own denoising filters (Gradient/Curvature Anisotropic Diffusion).
        self.parent.categories = ["Filtering.Denoising"]
        self.parent.dependencies = []
        self.parent.contributors = ["medidiff developers"]
        self.parent.helpText = (
            "Denoise, inpaint, deblur or restore (unknown bias field, blur or thick slices) the selected "
            "volume with a diffusion model, using the <b>medidiff</b> Python package shipped with this "
            "extension. The restoration runs in a background process: Slicer stays responsive, a progress "
            "bar follows it and Cancel stops it. The result (and, with 2 or more samples, an uncertainty "
            "map) is added to the scene with the input's geometry, in the input's study. "
            "See docs/slicer.md in the medidiff repository."
        )
        self.parent.acknowledgementText = (
            "Built on MONAI's DiffusionModelUNet and PyTorch. The module layout follows the 3D Slicer "
            "scripted module template and the background-process pattern of SlicerMONAIAuto3DSeg."
        )


#
# Presentation of medidiff's names (the names themselves come from its registry)
#

# Labels for the noise models of medidiff's registry; a model without a label is shown by its name.
NOISE_LABELS = {"gaussian": "Gaussian (CT, complex MRI)", "rician": "Rician (magnitude MRI)"}
# The parameter-node field of each degradation kind of the registry (tests/slicer checks the two agree).
DEGRADATION_FIELDS = {"bias": "degradeBias", "blur": "degradeBlur", "thick-slices": "degradeSlices"}
# How a result is named after its task ("MRHead denoised"); other tasks: "MRHead <task> result".
RESULT_SUFFIX = {"denoise": "denoised", "inpaint": "inpainted", "restore": "restored", "deblur": "deblurred"}


def resultSuffix(task):
    return RESULT_SUFFIX.get(task, f"{task} result")


class SigmaMode(enum.Enum):
    AUTO = "auto"
    VALUE = "value"
    PERCENT = "percent"

    def label(self):
        return {
            "auto": "Estimate from the volume",
            "value": "Value in intensity units",
            "percent": "% of the 99.5th percentile",
        }[self.value]


class Device(enum.Enum):
    """The --device choices; exactly MediDiffLib.command.DEVICES (tests/slicer checks it)."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"

    def label(self):
        return {"auto": "Automatic (GPU if available)", "cpu": "CPU", "cuda": "GPU (CUDA)"}[self.value]


class Backend(enum.Enum):
    """The --backend choices; exactly MediDiffLib.command.BACKENDS (tests/slicer checks it)."""

    AUTO = "auto"
    TORCH = "torch"
    OPENVINO = "openvino"

    def label(self):
        return {
            "auto": "Automatic (OpenVINO on a CPU)",
            "torch": "PyTorch",
            "openvino": "OpenVINO (CPU)",
        }[self.value]


#
# MediDiffParameterNode
#


@parameterNodeWrapper
class MediDiffParameterNode:
    """The module's settings, saved with the scene.

    task and noiseModel are names from medidiff's registry ("" until the panel picks the first one);
    steps == 0 and samples == 0 mean the task's defaults; targetSpacing == 0 means the CLI's default
    (in-plane); fwhm == 0 means not set; seed == -1 means a random seed; modelPath == "" means the
    embedded default model.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    task: str = ""
    # parameterNodeWrapper needs the None member, and typing.Union: it does not recognise `A | B`.
    maskNode: Union[vtkMRMLSegmentationNode, vtkMRMLLabelMapVolumeNode, None]  # noqa: UP007
    degradeBias: bool = True
    degradeBlur: bool = False
    degradeSlices: bool = False
    targetSpacing: Annotated[float, WithinRange(0.0, 100.0)] = 0.0
    fwhm: Annotated[float, WithinRange(0.0, 100.0)] = 0.0
    noiseModel: str = ""
    sigmaMode: SigmaMode = SigmaMode.AUTO
    sigmaValue: Annotated[float, WithinRange(0.0, 1.0e6)] = 5.0
    steps: Annotated[int, WithinRange(0, 1000)] = 0
    samples: Annotated[int, WithinRange(0, 64)] = 0
    computeUncertainty: bool = False
    seed: Annotated[int, WithinRange(-1, 2**31 - 1)] = 0
    device: Device = Device.AUTO
    backend: Backend = Backend.AUTO
    modelPath: str = ""
    outputVolume: vtkMRMLScalarVolumeNode
    uncertaintyVolume: vtkMRMLScalarVolumeNode


#
# MediDiffWidget
#


class MediDiffWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel: options bound to the parameter node, Apply / Cancel, progress bar and status."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._catalog = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MediDiff.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MediDiffLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        # Synced by hand: the model path (an empty ctkPathLineEdit must mean "default model", and the
        # wrapper's Path connector would turn it into "."), and the task and noise lists (from medidiff).
        self.ui.modelPathLineEdit.connect("currentPathChanged(QString)", self.onModelPathChanged)
        self.ui.taskComboBox.connect("currentIndexChanged(int)", self.onTaskChanged)
        self.ui.noiseModelComboBox.connect("currentIndexChanged(int)", self.onNoiseModelChanged)

        self.ui.progressBar.setVisible(False)
        self.ui.cancelButton.enabled = False
        self._fillChoices()
        self.initializeParameterNode()
        self._updateDependencyLabel()

    def cleanup(self):
        if self._job is not None:
            self._job.cancel(wait=True)
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()
        self._updateDependencyLabel()

    def exit(self):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)

    def onSceneStartClose(self, caller, event):
        if self._job is not None:  # its input is about to disappear
            self._job.cancel(wait=True)
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def _fillChoices(self):
        """Fill the task and noise-model lists from medidiff's registry (installed, else the payload's)."""
        self._catalog = self.logic.catalog()
        for combo, items in (
            (
                self.ui.taskComboBox,
                [(t.name, t.summary) for t in self._catalog.panel_tasks()] if self._catalog else [],
            ),
            (
                self.ui.noiseModelComboBox,
                [(n, NOISE_LABELS.get(n, n)) for n in self._catalog.noise_models] if self._catalog else [],
            ),
        ):
            wasBlocked = combo.blockSignals(True)
            combo.clear()
            for name, text in items:
                combo.addItem(
                    f"{name[:1].upper()}{name[1:]}: {text}" if combo is self.ui.taskComboBox else text, name
                )
            combo.blockSignals(wasBlocked)

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolume and not firstVolume.IsA("vtkMRMLLabelMapVolumeNode"):
                self._parameterNode.inputVolume = firstVolume

    def setParameterNode(self, inputParameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            if self._catalog is not None:
                if self._parameterNode.task not in self._catalog.names and self._catalog.panel_tasks():
                    self._parameterNode.task = self._catalog.panel_tasks()[0].name
                if self._parameterNode.noiseModel not in self._catalog.noise_models:
                    self._parameterNode.noiseModel = self._catalog.noise_models[0]
            # Widgets carry a "SlicerParameterName" property in the .ui file naming their parameter.
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)
            self.ui.modelPathLineEdit.currentPath = self._parameterNode.modelPath
            self._updateGui()

    def onModelPathChanged(self, path):
        if self._parameterNode:
            self._parameterNode.modelPath = path.strip()

    def onTaskChanged(self, index):
        if self._parameterNode and index >= 0:
            self._parameterNode.task = self.ui.taskComboBox.itemData(index)

    def onNoiseModelChanged(self, index):
        if self._parameterNode and index >= 0:
            self._parameterNode.noiseModel = self.ui.noiseModelComboBox.itemData(index)

    def _updateDependencyLabel(self):
        text = self.logic.dependencySummary()
        self.ui.dependencyLabel.setVisible(bool(text))
        self.ui.dependencyLabel.text = text or ""

    def _running(self):
        return self._job is not None and self._job.running

    def _updateGui(self, caller=None, event=None):
        parameters = self._parameterNode
        if parameters is None:
            return
        for combo, value in (
            (self.ui.taskComboBox, parameters.task),
            (self.ui.noiseModelComboBox, parameters.noiseModel),
        ):
            index = combo.findData(value)
            if index >= 0 and combo.currentIndex != index:
                wasBlocked = combo.blockSignals(True)
                combo.currentIndex = index
                combo.blockSignals(wasBlocked)
        task = None
        if self._catalog is not None and parameters.task in self._catalog.names:
            task = self._catalog.task(parameters.task)
        takes = task.takes if task is not None else (lambda option: False)
        rows = (
            ("mask", (self.ui.maskLabel, self.ui.maskSelector)),
            ("degradation", (self.ui.degradationLabel, self.ui.degradationWidget)),
            ("fwhm", (self.ui.fwhmLabel, self.ui.fwhmSpinBox)),
            ("noise", (self.ui.noiseModelLabel, self.ui.noiseModelComboBox)),
            ("sigma", (self.ui.sigmaLabel, self.ui.sigmaWidget)),
        )
        for option, widgets in rows:
            for widget in widgets:
                widget.setVisible(takes(option))
        thickSlices = takes("target_spacing") and parameters.degradeSlices
        for widget in (self.ui.targetSpacingLabel, self.ui.targetSpacingSpinBox):
            widget.setVisible(thickSlices)
        self.ui.sigmaValueSpinBox.enabled = parameters.sigmaMode is not SigmaMode.AUTO
        self.ui.sigmaValueSpinBox.suffix = " %" if parameters.sigmaMode is SigmaMode.PERCENT else ""
        defaultSamples = task.samples if task is not None else 1
        self.ui.samplesSpinBox.specialValueText = f"Task default ({defaultSamples})"
        samples = parameters.samples or defaultSamples
        self.ui.uncertaintyCheckBox.enabled = samples >= 2
        if samples < 2 and parameters.computeUncertainty:
            parameters.computeUncertainty = False  # an uncertainty map needs 2 samples or more

        reason = self.logic.whyNotApply(parameters, self._catalog)
        running = self._running()
        self.ui.applyButton.enabled = reason is None and not running
        self.ui.applyButton.toolTip = reason or errors.status("ready")
        self.ui.cancelButton.enabled = running

    def onApplyButton(self):
        if self._running():
            return
        try:
            if not self.logic.ensureDependencies(interactive=True):
                self.ui.statusLabel.text = errors.message("install_declined")
                return
            self._updateDependencyLabel()
            if self._catalog is None or self._catalog != self.logic.catalog():
                self._fillChoices()  # medidiff was just installed or updated
                self.setParameterNode(self._parameterNode)
            self._job = self.logic.startRestoration(
                self._parameterNode, onProgress=self._onProgress, onFinished=self._onFinished
            )
        except errors.MediDiffPluginError as exc:
            self._showError(exc.message, exc.details)
            return
        except Exception as exc:  # a bug: still show it rather than fail silently in the Python console
            logging.exception("MediDiff could not start")
            self._showError(errors.message("could_not_start", error=exc), traceback.format_exc())
            return
        self._setRunning(True)
        self.ui.statusLabel.text = errors.status("starting", elapsed="0:00")

    def onCancelButton(self):
        if self._job is not None:
            self.ui.statusLabel.text = errors.status("cancelling")
            self._job.cancel()  # returns at once; _onFinished follows when the process has gone

    def _setRunning(self, running):
        self.ui.inputsCollapsibleButton.enabled = not running
        self.ui.optionsCollapsibleButton.enabled = not running
        self.ui.advancedCollapsibleButton.enabled = not running
        self.ui.progressBar.setVisible(running)
        self.ui.progressBar.setRange(0, 0)  # busy indicator until the first progress line
        self._updateGui()

    def _onProgress(self, job, status):
        if job.cancelRequested:
            self.ui.statusLabel.text = errors.status("cancelling")
            return
        progress = status.progress
        elapsed = _formatSeconds(status.elapsed_s)
        if progress is None:
            self.ui.statusLabel.text = errors.status("starting", elapsed=elapsed)
            return
        self.ui.progressBar.setRange(0, 1000)
        self.ui.progressBar.setValue(round(1000 * progress.fraction))
        self.ui.statusLabel.text = errors.status("running", progress=progress.describe(), elapsed=elapsed)

    def _onFinished(self, job):
        self._job = None
        self._setRunning(False)
        elapsed = _formatSeconds(job.elapsedSeconds)
        if job.state is ProcessState.SUCCEEDED:
            if self._parameterNode:
                self._parameterNode.outputVolume = job.outputVolume
                self._parameterNode.uncertaintyVolume = job.uncertaintyVolume
            slicer.util.setSliceViewerLayers(background=job.outputVolume, fit=True)
            added = f"'{job.outputVolume.GetName()}'"
            if job.uncertaintyVolume is not None:
                added += f" and '{job.uncertaintyVolume.GetName()}'"
            if job.warnings:  # written, but medidiff doubts it: say so where the user looks, and ask to check
                self.ui.statusLabel.text = errors.status(
                    "done_warning", elapsed=elapsed, added=added, warning=job.warnings[0]
                )
                slicer.util.warningDisplay(
                    errors.status("done_warning", elapsed=elapsed, added=added, warning=job.warnings[0]),
                    windowTitle="MediDiff",
                    detailedText="\n".join(job.warnings + job.notes),
                )
            else:
                note = f" Note: {job.notes[0]}." if job.notes else ""
                self.ui.statusLabel.text = errors.status("done", elapsed=elapsed, added=added) + note
        elif job.state is ProcessState.CANCELLED:
            self.ui.statusLabel.text = errors.status("cancelled", elapsed=elapsed)
        else:
            error = job.error or errors.ProcessError(errors.message("process_failed", code=job.returncode))
            self._showError(error.message, error.details)

    def _showError(self, message, details=""):
        self.ui.statusLabel.text = message
        if details:
            slicer.util.errorDisplay(message, windowTitle="MediDiff", detailedText=details)
        else:
            slicer.util.errorDisplay(message, windowTitle="MediDiff")


def _formatSeconds(seconds):
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}:{secs:02d}"


#
# MediDiffLogic
#


class MediDiffLogic(ScriptedLoadableModuleLogic):
    """Turns the parameters into a ``medidiff restore`` run; usable from scripts without the Widget."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self.moduleDir = Path(__file__).resolve().parent
        self._source = None
        self._sourceRead = False

    def getParameterNode(self):
        return MediDiffParameterNode(super().getParameterNode())

    # -- medidiff: where it comes from, what it offers ------------------------------------------------------

    def source(self):
        """Where this module installs medidiff from: its payload, or the checkout it runs from (or None)."""
        if not self._sourceRead:
            try:
                self._source = dependencies.find_source(self.moduleDir)
            except (OSError, ValueError, KeyError):  # a damaged payload: as if there were none
                logging.exception("MediDiff: the medidiff payload next to the module is unreadable")
                self._source = None
            self._sourceRead = True
        return self._source

    def catalog(self):
        """medidiff's task catalog: from the installed medidiff, else from the payload manifest, else None."""
        installed = catalogLib.load_installed()
        if installed is not None:
            return installed
        source = self.source()
        return source.payload.catalog if source is not None and source.payload is not None else None

    def extraRequirements(self):
        """Resources/requirements.txt: what is installed next to medidiff (psutil)."""
        return dependencies.read_requirements(self.moduleDir / "Resources" / "requirements.txt")

    def dependencySummary(self):
        """A line for the panel when something is missing or outdated (None when ready)."""
        source = self.source()
        gate = dependencies.python_gate(
            sys.version_info, source.requires_python if source else dependencies.DEFAULT_REQUIRES_PYTHON
        )
        if gate is not None:
            return gate
        status = dependencies.detect(source, self.extraRequirements())
        if status.missing:
            return errors.status("not_installed", missing=", ".join(status.missing))
        if status.stale is not None and source is not None:
            return errors.status("outdated", installed=status.medidiff.version, expected=source.describe())
        return None

    # -- dependencies ---------------------------------------------------------------------------------------

    def ensureDependencies(self, interactive=True):
        """Make the module's own medidiff (and PyTorch) importable, installing them after asking the user.

        Args:
            interactive: False for scripts and self-tests: install without dialogs.

        Returns:
            True when ready; False when the user declined an installation.

        Raises:
            errors.DependencyError: Slicer's Python is too old, the module carries no medidiff, or the
                installation ran but did not give what is needed.
        """
        source = self.source()
        gate = dependencies.python_gate(
            sys.version_info, source.requires_python if source else dependencies.DEFAULT_REQUIRES_PYTHON
        )
        if gate is not None:
            raise errors.DependencyError(gate)
        status = dependencies.detect(source, self.extraRequirements())
        if status.ready:
            return True
        if source is None:
            if status.medidiff is not None and status.torch_ok:
                return True  # installed by hand next to a module copied without its payload
            raise errors.DependencyError(errors.message("no_payload"))
        steps = dependencies.plan_installation(
            status, source, has_pip_ensure=self._pipEnsure() is not None, interactive=interactive
        )
        for step in steps:
            if not self._runInstallStep(step):
                return False
        importlib.invalidate_caches()
        _forgetMedidiffModules()
        status = dependencies.detect(source, self.extraRequirements())
        if not status.ready:
            if status.missing:
                reason = f"still missing: {', '.join(status.missing)}"
            elif status.stale is not None:
                reason = f"medidiff is still {status.stale}"
            else:
                reason = errors.message(
                    "torch_too_old", installed=status.torch, requirement=source.torch_requirement
                )
            raise errors.DependencyError(errors.message("install_failed", reason=reason))
        return True

    @staticmethod
    def _pipEnsure():
        """Slicer's pip_ensure when this Slicer has one (found by looking, not by version number)."""
        for name in dependencies.PIP_ENSURE_MODULES:
            try:
                module = importlib.import_module(name)
            except ImportError:
                continue
            function = getattr(module, "pip_ensure", None)
            if callable(function):
                return function
        return None

    def _runInstallStep(self, step):
        """Execute one step of dependencies.plan_installation; False when the user said no."""
        kind = step.kind
        if kind is dependencies.StepKind.CONFIRM:
            return bool(slicer.util.confirmOkCancelDisplay(step.text, windowTitle="MediDiff"))
        try:
            if kind is dependencies.StepKind.TORCH:
                import PyTorchUtils

                torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
                    askConfirmation=step.ask, torchVersionRequirement=step.requirement or None
                )
                if torch is None and not step.ask:
                    raise errors.DependencyError(
                        errors.message("pytorch_missing", reason="nothing was installed")
                    )
                return torch is not None
            if kind is dependencies.StepKind.PIP_ENSURE:
                from packaging.requirements import Requirement

                self._pipEnsure()(
                    [Requirement(text) for text in step.arguments], requester=dependencies.REQUESTER
                )
                return True
            slicer.util.pip_install(list(step.arguments))
            return True
        except errors.MediDiffPluginError:
            raise
        except Exception as exc:
            if dependencies.is_declined(exc):
                return False
            raise errors.DependencyError(
                errors.message("install_failed", reason=str(exc)), traceback.format_exc()
            ) from exc

    # -- checks and files -----------------------------------------------------------------------------------

    @staticmethod
    def geometryOf(volumeNode):
        """The volume's voxel grid as MediDiffLib sees it (dimensions and IJK-to-RAS matrix)."""
        matrix = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(matrix)
        rows = [[matrix.GetElement(r, c) for c in range(4)] for r in range(4)]
        return checks.VolumeGeometry.from_values(volumeNode.GetImageData().GetDimensions(), rows)

    @staticmethod
    def checkInputVolume(volumeNode):
        """Raise errors.InputVolumeError unless the volume is a 3D single-component scalar volume."""
        if volumeNode is None:
            raise errors.InputVolumeError(errors.message("no_input"))
        imageData = volumeNode.GetImageData()
        checks.check_input_volume(
            volumeNode.GetName(),
            volumeNode.GetClassName(),
            imageData.GetNumberOfScalarComponents() if imageData else None,
            imageData.GetDimensions() if imageData else None,
        )

    @staticmethod
    def writeVolume(volumeNode, path):
        """Write a volume to a NRRD file without touching the node's own storage.

        slicer.util.saveNode would re-point the node's storage node at this temporary file, and saving the
        scene later would then reference a deleted file; a detached storage node writes the data only.
        """
        storageNode = slicer.mrmlScene.CreateNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
        try:
            storageNode.SetFileName(str(path))
            storageNode.UseCompressionOff()  # written once, read once: speed over size
            if not storageNode.WriteData(volumeNode):
                raise errors.ProcessError(
                    errors.message("write_failed", name=volumeNode.GetName(), path=path)
                )
        finally:
            storageNode.UnRegister(None)

    @staticmethod
    def readVolume(path, name):
        """Load a NRRD result as a new scalar volume with a display node and no storage node.

        A detached storage node reads the file (the file is temporary: saving the scene later must write the
        data itself, not point at a deleted file). NRRD carries the geometry, so the node gets it exactly.
        """
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
        storageNode = slicer.mrmlScene.CreateNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
        try:
            storageNode.SetFileName(str(path))
            ok = storageNode.ReadData(node)
        finally:
            storageNode.UnRegister(None)
        if not ok or node.GetImageData() is None:
            slicer.mrmlScene.RemoveNode(node)
            raise errors.ProcessError(errors.message("result_load", path=path))
        node.CreateDefaultDisplayNodes()
        return node

    # Slicer's colour table for the uncertainty map: low (blue) to high (red), as the guide says.
    UNCERTAINTY_COLORS = "vtkMRMLColorTableNodeFileColdToHotRainbow.txt"

    @staticmethod
    def showAsUncertainty(node):
        """Display a std map with the cold-to-hot colour table, its window from 0 to its 99th percentile.

        Returns False (the default grey display kept) where the colour table is missing, as in a bare MRML
        scene without Slicer's colour module.
        """
        display = node.GetDisplayNode()
        if display is None or slicer.mrmlScene.GetNodeByID(MediDiffLogic.UNCERTAINTY_COLORS) is None:
            return False
        display.SetAndObserveColorNodeID(MediDiffLogic.UNCERTAINTY_COLORS)
        values = slicer.util.arrayFromVolume(node)
        top = float(np.percentile(values, 99)) if values.size else 0.0
        display.AutoWindowLevelOff()
        display.SetWindowLevelMinMax(0.0, top if top > 0 else 1.0)
        return True

    @staticmethod
    def placeLikeReference(node, reference):
        """Put a result where its input is: same parent transform, same subject-hierarchy parent (study)."""
        node.SetAndObserveTransformNodeID(reference.GetTransformNodeID())
        shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
        if shNode is None:
            return
        referenceItem = shNode.GetItemByDataNode(reference)
        if not referenceItem:
            return
        parent = shNode.GetItemParent(referenceItem)
        item = shNode.GetItemByDataNode(node)
        if item:
            shNode.SetItemParent(item, parent)
        else:  # Slicer's subject hierarchy plugins add an item for every new node; without them, add it here
            shNode.CreateItem(parent, node)

    def maskLabelmap(self, maskNode, inputVolume):
        """Return ``(labelmap, temporary)``: the mask on the input's voxel grid, checked.

        A segmentation is exported with the input volume as reference geometry (so it always matches); a label
        map must already lie on the input's grid. ``temporary`` labelmaps must be removed by the caller.
        """
        if maskNode is None:
            raise errors.MaskError(errors.message("no_mask", task="inpaint"))
        temporary = maskNode.IsA("vtkMRMLSegmentationNode")
        if temporary:
            labelmap = slicer.mrmlScene.AddNewNodeByClass(
                "vtkMRMLLabelMapVolumeNode", slicer.mrmlScene.GenerateUniqueName("MediDiffMask")
            )
            segmentIds = vtk.vtkStringArray()
            maskNode.GetSegmentation().GetSegmentIDs(segmentIds)
            exported = segmentIds.GetNumberOfValues() > 0 and (
                slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
                    maskNode, segmentIds, labelmap, inputVolume
                )
            )
            # The export can report success and leave no voxels (a segment without a labelmap): check both.
            imageData = labelmap.GetImageData()
            if not exported or imageData is None or imageData.GetPointData().GetScalars() is None:
                slicer.mrmlScene.RemoveNode(labelmap)
                raise errors.MaskError(errors.message("mask_empty", name=maskNode.GetName()))
            sameTransform = True  # the export resamples into the input's frame
        else:
            labelmap = maskNode
            sameTransform = maskNode.GetTransformNodeID() == inputVolume.GetTransformNodeID()
        try:
            checks.check_mask_geometry(
                maskNode.GetName(),
                inputVolume.GetName(),
                self.geometryOf(inputVolume),
                self.geometryOf(labelmap),
                same_transform=sameTransform,
            )
            scalars = labelmap.GetImageData().GetPointData().GetScalars()
            nonzero = (
                int(np.count_nonzero(slicer.util.arrayFromVolume(labelmap))) if scalars is not None else 0
            )
            checks.check_mask_not_empty(maskNode.GetName(), nonzero)
        except errors.MediDiffPluginError:
            if temporary:
                slicer.mrmlScene.RemoveNode(labelmap)
            raise
        return labelmap, temporary

    def writeMask(self, maskNode, inputVolume, path):
        labelmap, temporary = self.maskLabelmap(maskNode, inputVolume)
        try:
            self.writeVolume(labelmap, path)
        finally:
            if temporary:
                slicer.mrmlScene.RemoveNode(labelmap)

    # -- running --------------------------------------------------------------------------------------------

    @staticmethod
    def restoreParameters(parameters, workspace, catalog):
        """Map the panel's parameters to MediDiffLib's RestoreParameters (validated when the argv is built).

        Only the options the task takes (catalog: medidiff's registry) are passed; the rest keep the CLI's
        defaults.
        """
        task = catalog.task(parameters.task)
        sigma = None
        if task.takes("sigma"):
            if parameters.sigmaMode is SigmaMode.AUTO:
                sigma = "auto"
            elif parameters.sigmaMode is SigmaMode.PERCENT:
                sigma = f"{parameters.sigmaValue:g}%"
            else:
                sigma = parameters.sigmaValue
        degradations = ()
        if task.takes("degradation"):
            degradations = tuple(
                kind for kind, field in DEGRADATION_FIELDS.items() if getattr(parameters, field)
            )
        thickSlices = "thick-slices" in degradations
        return RestoreParameters(
            input_path=workspace.input_path,
            output_path=workspace.output_path,
            task=task.name,
            noise=(parameters.noiseModel or None) if task.takes("noise") else None,
            sigma=sigma,
            mask_path=workspace.mask_path if task.takes("mask") and parameters.maskNode else None,
            degradations=degradations,
            target_spacing=(
                parameters.targetSpacing
                if task.takes("target_spacing") and thickSlices and parameters.targetSpacing > 0
                else None
            ),
            fwhm=parameters.fwhm if task.takes("fwhm") and parameters.fwhm > 0 else None,
            model=parameters.modelPath.strip() or None,
            steps=parameters.steps or None,
            samples=parameters.samples or None,
            uncertainty_path=workspace.uncertainty_path if parameters.computeUncertainty else None,
            seed=parameters.seed if parameters.seed >= 0 else None,
            device=parameters.device.value,
            backend=None
            if parameters.backend is Backend.AUTO
            else parameters.backend.value,  # the CLI's auto
        )

    def whyNotApply(self, parameters, catalog):
        """Why Apply cannot run with these parameters (the same checks as the command builder), or None."""
        if not parameters.inputVolume:
            return errors.message("no_input")
        if catalog is None:
            return None  # medidiff is not installed yet: Apply installs it first
        try:
            validate(self.restoreParameters(parameters, Workspace(Path("medidiff-check")), catalog), catalog)
        except errors.MediDiffPluginError as exc:
            return exc.message
        return None

    def startRestoration(self, parameters, onProgress=None, onFinished=None):
        """Write the inputs, start ``medidiff restore`` in the background and return its MediDiffJob.

        Args:
            parameters: a MediDiffParameterNode (or any object with its fields).
            onProgress: called as ``onProgress(job, status)`` on every poll while it runs.
            onFinished: called as ``onFinished(job)`` once, after the results were loaded (or it failed).

        Raises:
            errors.MediDiffPluginError: invalid input, mask or options; medidiff missing; process not started.
        """
        inputVolume = parameters.inputVolume
        self.checkInputVolume(inputVolume)
        catalog = catalogLib.load_installed()
        if catalog is None:
            raise errors.DependencyError(errors.message("medidiff_missing_install"))
        workspace = Workspace.create(slicer.app.temporaryPath)
        try:
            restoreParameters = self.restoreParameters(parameters, workspace, catalog)
            python = dependencies.python_executable()
            argv = build_restore_argv(restoreParameters, catalog, dependencies.medidiff_command(python))
            if restoreParameters.mask_path is not None:
                self.writeMask(parameters.maskNode, inputVolume, workspace.mask_path)
            self.writeVolume(inputVolume, workspace.input_path)
            baseName = f"{inputVolume.GetName()} {resultSuffix(restoreParameters.task)}"
            job = MediDiffJob(
                argv,
                workspace,
                inputVolume,
                outputName=slicer.mrmlScene.GenerateUniqueName(baseName),
                uncertaintyName=(
                    slicer.mrmlScene.GenerateUniqueName(f"{baseName} uncertainty")
                    if restoreParameters.uncertainty_path is not None
                    else None
                ),
                onProgress=onProgress,
                onFinished=onFinished,
            )
            job.start()
        except Exception:
            workspace.cleanup()
            raise
        return job


def _forgetMedidiffModules():
    """Drop medidiff's torch-free modules (the registry) from this process after an install or update."""
    for name in list(sys.modules):
        if name == "medidiff" or name.startswith("medidiff."):
            del sys.modules[name]


class MediDiffJob:
    """One running restoration: polls the process on a QTimer and loads the results back when it ends."""

    POLL_INTERVAL_MS = 200

    def __init__(
        self, argv, workspace, inputVolume, outputName, uncertaintyName, onProgress=None, onFinished=None
    ):
        self.argv = list(argv)
        self.workspace = workspace
        self.inputVolume = inputVolume
        self.outputName = outputName
        self.uncertaintyName = uncertaintyName
        self.onProgress = onProgress
        self.onFinished = onFinished
        # Slicer's own environment is the one PythonSlicer needs (slicer.util.pip_install runs it likewise).
        self.process = BackgroundProcess(self.argv, env=dict(os.environ))
        self.state = ProcessState.NOT_STARTED
        self.cancelRequested = False
        self.lastProgress = None  # the latest ProgressEvent
        self.returncode = None
        self.elapsedSeconds = 0.0
        self.outputVolume = None
        self.uncertaintyVolume = None
        self.error = None  # an errors.MediDiffPluginError once failed
        self.warnings = []  # medidiff's one-line warnings (e.g. a failed consistency check), prefix removed
        self.notes = []  # medidiff's one-line notes (e.g. where the noise level came from), prefix removed
        self.timer = qt.QTimer()
        self.timer.setInterval(self.POLL_INTERVAL_MS)
        self.timer.connect("timeout()", self._poll)

    @property
    def running(self):
        return self.state is ProcessState.RUNNING

    def start(self):
        logging.info("MediDiff: %s", " ".join(shlex.quote(arg) for arg in self.argv))
        self.process.start()
        self.state = ProcessState.RUNNING
        self.timer.start()

    def cancel(self, wait=False):
        """Stop the process tree; onFinished is called with state CANCELLED.

        Args:
            wait: False (the Cancel button): ask the processes to stop and return at once; the timer's polls
                kill what is left after the grace period and finish the job. True (module or scene closing):
                return once the process has gone.
        """
        if not self.running:
            return
        self.cancelRequested = True
        if wait:
            self.process.cancel()
        else:
            self.process.request_cancel()
        self._poll()

    def _poll(self):
        if self.state is not ProcessState.RUNNING:
            return
        status = self.process.poll()
        for line in status.new_lines:
            logging.info("medidiff: %s", line)
            for prefix, kept in (
                (errors.CLI_WARNING_PREFIX, self.warnings),
                (errors.CLI_NOTE_PREFIX, self.notes),
            ):
                if line.startswith(prefix):
                    kept.append(line[len(prefix) :])
        if status.progress is not None:
            self.lastProgress = status.progress
        self.elapsedSeconds = status.elapsed_s
        if not status.state.finished:
            if self.onProgress is not None:
                self.onProgress(self, status)
            return
        self.timer.stop()
        self._finish(status)

    def _finish(self, status: ProcessStatus):
        self.returncode = status.returncode
        try:
            if status.state is ProcessState.SUCCEEDED:
                self.outputVolume = self._loadResult(self.workspace.output_path, self.outputName)
                if self.uncertaintyName is not None:
                    self.uncertaintyVolume = self._loadResult(
                        self.workspace.uncertainty_path, self.uncertaintyName
                    )
                    MediDiffLogic.showAsUncertainty(self.uncertaintyVolume)
            elif status.state is ProcessState.FAILED:
                self.error = self.process.error()
            self.state = status.state
        except errors.MediDiffPluginError as exc:
            self.error = exc
            self.state = ProcessState.FAILED
        finally:
            self.workspace.cleanup()
        if self.state is ProcessState.FAILED and self.error is not None:
            logging.error("MediDiff: %s\n%s", self.error.message, self.error.details)
        if self.onFinished is not None:
            self.onFinished(self)

    def _loadResult(self, path, name):
        if not Path(path).is_file():
            raise errors.ProcessError(errors.message("result_missing", path=path))
        node = MediDiffLogic.readVolume(path, name)
        MediDiffLogic.placeLikeReference(node, self.inputVolume)
        return node


#
# MediDiffTest
#


class MediDiffTest(ScriptedLoadableModuleTest):
    """Self-test: real, tiny restorations end to end through the same Logic and MediDiffLib code.

    Running it installs medidiff without asking when it is missing (running the test is the consent).
    """

    TIMEOUT_S = 600

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_MediDiffChecks()
        self.setUp()
        self.test_MediDiffDenoiseEndToEnd()
        self.setUp()
        self.test_MediDiffInpaintWithSegmentation()
        self.setUp()
        self.test_MediDiffCancel()

    # -- helpers --------------------------------------------------------------------------------------------

    IJK_TO_RAS = ((-1.2, 0.0, 0.0, 10.0), (0.0, -0.9, 0.0, -20.0), (0.0, 0.0, 1.5, 5.0), (0.0, 0.0, 0.0, 1.0))

    def _syntheticVolume(self, name="MediDiffTestVolume", nodeClassName=None, array=None):
        """A 16³ noisy phantom (bright ball + smooth gradient) with an anisotropic, flipped, shifted grid."""
        if array is None:
            k, j, i = np.meshgrid(*(np.linspace(-1.0, 1.0, 16),) * 3, indexing="ij")
            clean = 100.0 + 800.0 * (i**2 + j**2 + k**2 < 0.5) + 200.0 * np.sin(3.0 * i)
            array = (clean + np.random.default_rng(0).normal(0.0, 40.0, clean.shape)).astype(np.float32)
        node = slicer.util.addVolumeFromArray(
            array, ijkToRAS=np.array(self.IJK_TO_RAS), name=name, nodeClassName=nodeClassName
        )
        return node, array

    def _run(self, logic, parameters):
        finished = []
        job = logic.startRestoration(parameters, onFinished=finished.append)
        deadline = time.monotonic() + self.TIMEOUT_S
        while not finished:
            if time.monotonic() > deadline:
                job.cancel(wait=True)
                self.fail(f"medidiff did not finish within {self.TIMEOUT_S} s")
            slicer.app.processEvents()
            time.sleep(0.02)
        return job

    def _assertSuccess(self, job):
        details = "" if job.error is None else f"{job.error.message}\n{job.error.details}"
        self.assertIs(job.state, ProcessState.SUCCEEDED, details)
        self.assertFalse(job.workspace.directory.exists(), "temporary files left behind")

    def _assertSameGeometry(self, reference, node):
        logic = MediDiffLogic
        difference = checks.geometry_difference(logic.geometryOf(reference), logic.geometryOf(node))
        self.assertIsNone(difference, f"{node.GetName()}: {difference}")
        self.assertEqual(node.GetTransformNodeID(), reference.GetTransformNodeID())

    # -- tests ----------------------------------------------------------------------------------------------

    def test_MediDiffChecks(self):
        """Input and mask checks on real nodes (no process)."""
        logic = MediDiffLogic()
        volume, array = self._syntheticVolume()
        logic.checkInputVolume(volume)
        labels = (array > 500).astype(np.uint8)
        labelmap, _ = self._syntheticVolume("labels", "vtkMRMLLabelMapVolumeNode", labels)
        with self.assertRaises(errors.InputVolumeError):
            logic.checkInputVolume(labelmap)
        mask, temporary = logic.maskLabelmap(labelmap, volume)
        self.assertIs(mask, labelmap)
        self.assertFalse(temporary)
        empty, _ = self._syntheticVolume("empty", "vtkMRMLLabelMapVolumeNode", np.zeros_like(labels))
        with self.assertRaises(errors.MaskError):
            logic.maskLabelmap(empty, volume)
        shifted = slicer.util.addVolumeFromArray(
            labels, name="shifted", nodeClassName="vtkMRMLLabelMapVolumeNode"
        )
        with self.assertRaises(errors.MaskError):
            logic.maskLabelmap(shifted, volume)
        with self.assertRaises(errors.MaskError):
            logic.maskLabelmap(None, volume)

    def test_MediDiffDenoiseEndToEnd(self):
        """Denoise with 2 samples and an uncertainty map; both come back on the input's grid."""
        logic = MediDiffLogic()
        self.assertTrue(logic.ensureDependencies(interactive=False), "medidiff could not be installed")
        volume, noisy = self._syntheticVolume()
        parameters = logic.getParameterNode()
        parameters.inputVolume = volume
        parameters.task = "denoise"
        parameters.steps = 2
        parameters.samples = 2
        parameters.computeUncertainty = True
        parameters.seed = 0
        parameters.device = Device.CPU
        job = self._run(logic, parameters)
        self._assertSuccess(job)
        self.assertIsNotNone(job.lastProgress, "no medidiff-progress line was read")
        self._assertSameGeometry(volume, job.outputVolume)
        self._assertSameGeometry(volume, job.uncertaintyVolume)
        self.assertIsNone(job.outputVolume.GetStorageNode())
        restored = slicer.util.arrayFromVolume(job.outputVolume)
        uncertainty = slicer.util.arrayFromVolume(job.uncertaintyVolume)
        self.assertEqual(restored.shape, noisy.shape)
        self.assertTrue(np.isfinite(restored).all())
        self.assertFalse(np.allclose(restored, noisy), "the output is the unchanged input")
        self.assertTrue(np.isfinite(uncertainty).all() and (uncertainty >= 0).all())

    def test_MediDiffInpaintWithSegmentation(self):
        """Inpaint a ball given as a segmentation: the voxels outside the mask keep their values."""
        logic = MediDiffLogic()
        self.assertTrue(logic.ensureDependencies(interactive=False), "medidiff could not be installed")
        volume, noisy = self._syntheticVolume()
        segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "hole")
        segmentation.CreateDefaultDisplayNodes()
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
        center = np.array(self.IJK_TO_RAS) @ np.array([7.5, 7.5, 7.5, 1.0])
        sphere = vtk.vtkSphereSource()
        sphere.SetCenter(*center[:3])
        sphere.SetRadius(4.0)
        sphere.Update()
        segmentation.AddSegmentFromClosedSurfaceRepresentation(sphere.GetOutput(), "hole", [1.0, 0.0, 0.0])
        mask, temporary = logic.maskLabelmap(segmentation, volume)
        missing = slicer.util.arrayFromVolume(mask) > 0
        if temporary:
            slicer.mrmlScene.RemoveNode(mask)
        self.assertTrue(missing.any() and not missing.all())

        parameters = logic.getParameterNode()
        parameters.inputVolume = volume
        parameters.task = "inpaint"
        parameters.maskNode = segmentation
        parameters.steps = 3
        parameters.samples = 1
        parameters.computeUncertainty = False
        parameters.seed = 0
        parameters.device = Device.CPU
        job = self._run(logic, parameters)
        self._assertSuccess(job)
        self._assertSameGeometry(volume, job.outputVolume)
        restored = slicer.util.arrayFromVolume(job.outputVolume)
        tolerance = 1e-3 * float(noisy.max() - noisy.min())
        np.testing.assert_allclose(restored[~missing], noisy[~missing], atol=tolerance)

    def test_MediDiffCancel(self):
        """Cancel right after the start: no result, the process is gone, nothing is added to the scene."""
        logic = MediDiffLogic()
        self.assertTrue(logic.ensureDependencies(interactive=False), "medidiff could not be installed")
        volume, _ = self._syntheticVolume()
        parameters = logic.getParameterNode()
        parameters.inputVolume = volume
        parameters.task = "denoise"
        parameters.steps = 200
        parameters.samples = 8
        parameters.computeUncertainty = False
        parameters.device = Device.CPU
        finished = []
        job = logic.startRestoration(parameters, onFinished=finished.append)
        volumesBefore = slicer.mrmlScene.GetNodesByClass("vtkMRMLScalarVolumeNode").GetNumberOfItems()
        started = time.monotonic()
        job.cancel()  # what the Cancel button does: returns at once, the timer finishes the job
        self.assertLess(time.monotonic() - started, 0.5, "Cancel blocked the GUI")
        deadline = time.monotonic() + 30
        while not finished and time.monotonic() < deadline:
            slicer.app.processEvents()
            time.sleep(0.02)
        self.assertEqual(finished, [job])
        self.assertIs(job.state, ProcessState.CANCELLED)
        self.assertIsNotNone(job.process.returncode)  # reaped: the process has exited
        self.assertIsNone(job.outputVolume)
        self.assertFalse(job.workspace.directory.exists())
        self.assertEqual(
            slicer.mrmlScene.GetNodesByClass("vtkMRMLScalarVolumeNode").GetNumberOfItems(), volumesBefore
        )
