"""VoxelFM Features: choose a model, extract features of a CT volume, look at them as a PCA colour volume.

Also home of the pieces every VoxelFM module shares: ``ModelPanel`` (the "model" widgets: registry
combo box, id/path line edit, browse button, device) and ``ensureDependencies`` (torch via the PyTorch
extension, the rest from Resources/requirements.txt). The work itself lives in VoxelFMLib (Qt-free).
"""

from __future__ import annotations

import logging
import threading
from typing import Annotated

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

DEVICES = ("auto", "cpu", "cuda")
TORCH_REQUIREMENT = ">=2.2"
# Widgets (by .ui name) that ModelPanel drives; every module .ui that uses the panel must have them.
MODEL_PANEL_WIDGETS = ("modelComboBox", "modelReferenceLineEdit", "browseModelButton", "deviceComboBox")


class VoxelFMFeatures(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "VoxelFM Features"
        self.parent.categories = ["VoxelFM"]
        self.parent.dependencies = []
        self.parent.contributors = ["VoxelFM Slicer extension contributors"]
        self.parent.helpText = (
            "Extract VoxelFM foundation-model features of a CT volume (a frozen 3D ViT, one feature vector per "
            "14x14x14-voxel patch) and show their first three principal components as a colour volume. "
            "Features are cached on disk, so other VoxelFM modules reuse them."
        )
        self.parent.acknowledgementText = (
            "VoxelFM backbone by its authors; see the model card for licence terms."
        )


# ----------------------------------------------------------------------------- shared widget helpers


def ensureDependencies() -> bool:
    """Make torch (PyTorch extension) and Resources/requirements.txt importable; False if the user declined.

    pip runs on the main thread (slicer.util.pip_install creates Qt objects).
    """
    from VoxelFMLib import dependencies

    if not dependencies.torch_available():
        try:
            import PyTorchUtils
        except ImportError:
            slicer.util.errorDisplay(
                "VoxelFM needs PyTorch. Install the 'PyTorch' extension from the Extensions Manager, "
                "restart Slicer, and try again."
            )
            return False
        torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
            askConfirmation=True, torchVersionRequirement=TORCH_REQUIREMENT
        )
        if torch is None:
            return False
    missing = dependencies.missing_requirements()
    if not missing:
        return True
    path = str(dependencies.requirements_path())
    try:
        import slicer.pydeps as pydeps  # Slicer >= 5.11

        pydeps.pip_ensure(pydeps.load_requirements(path), requester="VoxelFM")
        return True
    except ImportError:
        pass
    except RuntimeError as exc:  # user declined in pip_ensure's dialog
        logging.info("VoxelFM dependencies not installed: %s", exc)
        return False
    if not slicer.util.confirmOkCancelDisplay(
        "VoxelFM needs these Python packages, which will be downloaded and installed now:\n\n"
        + "\n".join(missing),
        "VoxelFM: install Python packages",
    ):
        return False
    qt.QApplication.setOverrideCursor(qt.Qt.WaitCursor)
    try:
        slicer.util.pip_install(" ".join(f'"{m}"' for m in missing))
    finally:
        qt.QApplication.restoreOverrideCursor()
    return True


class ModelPanel:
    """Drives the model widgets of a module .ui (names in MODEL_PANEL_WIDGETS).

    The line edit holds the model reference (bound to the parameter node as ``modelReference``); the
    combo box lists registry models and copies the chosen id into it; the button picks a local file.
    """

    def __init__(self, ui, parameterNodeGetter):
        self.ui = ui
        self._parameterNode = parameterNodeGetter
        from VoxelFMLib.features_logic import registry_models

        self._choices = registry_models()
        self.ui.modelComboBox.clear()
        self.ui.modelComboBox.addItem("(choose a registered model)", "")
        for choice in self._choices:
            self.ui.modelComboBox.addItem(choice.label, choice.reference)
        self.ui.modelComboBox.connect("activated(int)", self.onModelChosen)
        self.ui.browseModelButton.connect("clicked(bool)", self.onBrowse)

    def onModelChosen(self, index: int) -> None:
        reference = self.ui.modelComboBox.itemData(index)
        node = self._parameterNode()
        if reference and node is not None:
            node.modelReference = reference

    def onBrowse(self) -> None:
        path = qt.QFileDialog.getOpenFileName(
            slicer.util.mainWindow(),
            "Choose a VoxelFM checkpoint",
            "",
            "VoxelFM checkpoints (*.pth *.safetensors *.json *.yaml);;All files (*)",
        )
        node = self._parameterNode()
        if path and node is not None:
            node.modelReference = path

    def setDefaultIfEmpty(self) -> None:
        node = self._parameterNode()
        if node is not None and not node.modelReference:
            from VoxelFMLib.features_logic import default_model_reference

            node.modelReference = default_model_reference()


class BusyState:
    """Progress bar + status label + cancel event of one long operation, updated on the main thread."""

    def __init__(self, ui):
        self.ui = ui
        self.cancel = threading.Event()
        self.running = False

    def start(self, message: str) -> None:
        self.cancel.clear()
        self.running = True
        self.ui.progressBar.setVisible(True)
        self.ui.progressBar.setValue(0)
        self.ui.statusLabel.setText(message)

    def progress(self, fraction: float, message: str) -> None:
        self.ui.progressBar.setValue(int(round(100 * max(0.0, min(1.0, fraction)))))
        if message:
            self.ui.statusLabel.setText(message)

    def stop(self, message: str) -> None:
        self.running = False
        self.ui.progressBar.setVisible(False)
        self.ui.statusLabel.setText(message)


def runInWorker(busy: BusyState, fn, *args, **kwargs):
    """Run fn(*args, progress=..., cancel=..., **kwargs) on the VoxelFM worker thread, GUI kept alive."""
    from VoxelFMLib.worker import ProgressRelay, run_pumping

    relay = ProgressRelay()
    return run_pumping(
        fn,
        *args,
        pump=slicer.app.processEvents,
        on_progress=busy.progress,
        relay=relay,
        progress=relay,
        cancel=busy.cancel,
        **kwargs,
    )


def userMessage(exc: Exception) -> str:
    """One line for the user: our errors carry their own advice; others get the type."""
    from voxelfm.errors import VoxelFMError

    return str(exc) if isinstance(exc, VoxelFMError) else f"{type(exc).__name__}: {exc}"


# ----------------------------------------------------------------------------- parameter node


@parameterNodeWrapper
class VoxelFMFeaturesParameterNode:
    modelReference: str = ""
    device: Annotated[str, Choice(list(DEVICES))] = "auto"
    inputVolume: vtkMRMLScalarVolumeNode
    useCache: bool = True
    showPCA: bool = True


# ----------------------------------------------------------------------------- widget


class VoxelFMFeaturesWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._features = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/VoxelFMFeatures.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = VoxelFMFeaturesLogic()
        self.busy = BusyState(self.ui)
        self.ui.progressBar.setVisible(False)
        self.modelPanel = ModelPanel(self.ui, lambda: self._parameterNode)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.extractButton.connect("clicked(bool)", self.onExtract)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.saveFeaturesButton.connect("clicked(bool)", self.onSaveFeatures)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.busy.cancel.set()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)

    def onSceneStartClose(self, caller, event) -> None:
        self.busy.cancel.set()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first:
                self._parameterNode.inputVolume = first
        self.modelPanel.setDefaultIfEmpty()

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
        self._updateButtons()

    def _updateButtons(self, caller=None, event=None) -> None:
        node = self._parameterNode
        ready = bool(node and node.inputVolume and node.modelReference) and not self.busy.running
        self.ui.extractButton.enabled = ready
        self.ui.extractButton.toolTip = "" if ready else "Select an input volume and a model."
        self.ui.cancelButton.enabled = self.busy.running
        self.ui.saveFeaturesButton.enabled = self._features is not None and not self.busy.running

    def onCancel(self) -> None:
        self.busy.cancel.set()
        self.ui.statusLabel.setText("Cancelling...")

    def onExtract(self) -> None:
        if self.busy.running or not ensureDependencies():
            return
        node = self._parameterNode
        self.busy.start("Extracting features...")
        self._updateButtons()
        try:
            self._features = self.logic.extract(node, self.busy)
            self.busy.stop(self.logic.describe(self._features))
            self.ui.featuresInfoLabel.setText(self.logic.describe(self._features))
        except Exception as exc:  # shown to the user; full trace in the log
            logging.exception("VoxelFM feature extraction failed")
            self.busy.stop(f"Failed: {userMessage(exc)}")
        finally:
            self._updateButtons()

    def onSaveFeatures(self) -> None:
        path = qt.QFileDialog.getSaveFileName(
            slicer.util.mainWindow(), "Save VoxelFM features", "features.npz", "Features (*.npz)"
        )
        if path and self._features is not None:
            self._features.save(path)
            self.ui.statusLabel.setText(f"Saved {path}")


# ----------------------------------------------------------------------------- logic


class VoxelFMFeaturesLogic(ScriptedLoadableModuleLogic):
    """Thin: reads parameters, delegates to VoxelFMLib (extraction on the worker thread)."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        from VoxelFMLib.features_logic import FeaturesLogic

        self.features = FeaturesLogic()

    def getParameterNode(self):
        return VoxelFMFeaturesParameterNode(super().getParameterNode())

    def extract(self, parameterNode, busy: BusyState):
        from VoxelFMLib.feature_display import show_features_pca
        from VoxelFMLib.volume_nodes import volume_from_node

        volumeNode = parameterNode.inputVolume
        volume = volume_from_node(volumeNode)  # main thread: MRML is not thread-safe
        features = runInWorker(
            busy,
            self.features.extract,
            volume,
            parameterNode.modelReference,
            parameterNode.device,
            cache=parameterNode.useCache,
        )
        if parameterNode.showPCA:
            name = slicer.mrmlScene.GenerateUniqueName(f"{volumeNode.GetName()} VoxelFM PCA")
            pcaNode = show_features_pca(slicer.mrmlScene, features, name)
            slicer.util.setSliceViewerLayers(background=volumeNode, foreground=pcaNode, foregroundOpacity=0.5)
        return features

    @staticmethod
    def describe(features) -> str:
        d, h, w, c = features.patch.shape
        model = (getattr(features, "model", None) or {}).get("id", "?")
        return f"{d}x{h}x{w} patch grid, {c} channels, model {model}"


# ----------------------------------------------------------------------------- test (runs inside Slicer)


class VoxelFMFeaturesTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_pca_volume_geometry()

    def test_pca_volume_geometry(self):
        """A synthetic feature grid becomes a colour volume on the grid's geometry."""
        import numpy as np

        from VoxelFMLib.feature_display import create_rgb_volume_node, pca_rgb

        self.delayDisplay("PCA colour volume")
        patch = np.random.default_rng(0).normal(size=(3, 4, 5, 16)).astype(np.float32)
        gridToRas = np.diag([14.0, 14.0, 14.0, 1.0])
        node = create_rgb_volume_node(slicer.mrmlScene, pca_rgb(patch), gridToRas, "pca")
        self.assertEqual(node.GetImageData().GetDimensions(), (5, 4, 3))
        self.assertEqual(node.GetImageData().GetNumberOfScalarComponents(), 3)
        self.assertEqual(node.GetSpacing(), (14.0, 14.0, 14.0))
        self.delayDisplay("Test passed")
