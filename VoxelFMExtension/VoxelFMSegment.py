"""VoxelFM Segment: few-shot segmentation from a few painted slices (or scribbles) per structure.

Paint one segment per structure in the Segment Editor, press "Fit and predict": a small probe is fitted
on VoxelFM features of the painted voxels and every voxel of the volume is classified. Predictions are
written as NEW segments (never into the painted ones), with a table of voxel counts and volumes. With
auto-refit on, the probe is refitted each time painting pauses. The fitted probe can be saved and
applied to other volumes. All work is done by VoxelFMLib (Qt-free) and the voxelfm core.
"""

from __future__ import annotations

import logging
from typing import Annotated

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin
from VoxelFMFeatures import DEVICES, BusyState, ModelPanel, ensureDependencies, runInWorker, userMessage

MODES = ("slices", "scribbles")
# Segmentation node events that mean "the user painted / added / removed / renamed a segment".
PAINT_EVENTS = (
    slicer.vtkSegmentation.RepresentationModified,
    slicer.vtkSegmentation.SegmentModified,
    slicer.vtkSegmentation.SegmentAdded,
    slicer.vtkSegmentation.SegmentRemoved,
)


class VoxelFMSegment(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "VoxelFM Segment"
        self.parent.categories = ["VoxelFM"]
        self.parent.dependencies = ["VoxelFMFeatures"]
        self.parent.contributors = ["VoxelFM Slicer extension contributors"]
        self.parent.helpText = (
            "Few-shot segmentation with VoxelFM features. Create one segment per structure and paint it on a "
            "few slices (workflow 'slices': the rest of each painted slice counts as background) or as "
            "scribbles (workflow 'scribbles': also paint a segment named 'background'). Then press "
            "'Fit and predict'. Predicted structures appear as new segments; your painted segments are "
            "never modified."
        )
        self.parent.acknowledgementText = (
            "VoxelFM backbone by its authors; see the model card for licence terms."
        )


@parameterNodeWrapper
class VoxelFMSegmentParameterNode:
    modelReference: str = ""
    device: Annotated[str, Choice(list(DEVICES))] = "auto"
    inputVolume: vtkMRMLScalarVolumeNode
    paintedSegmentation: vtkMRMLSegmentationNode
    mode: Annotated[str, Choice(list(MODES))] = "slices"
    outputSegmentation: vtkMRMLSegmentationNode
    autoRefit: bool = False
    refitDelay: Annotated[float, WithinRange(0.5, 10.0)] = 1.5


class VoxelFMSegmentWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._observedSegmentation = None
        self._writing = False  # our own writes must not trigger an auto-refit
        self._refitPending = False

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/VoxelFMSegment.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = VoxelFMSegmentLogic()
        self.busy = BusyState(self.ui)
        self.ui.progressBar.setVisible(False)
        self.modelPanel = ModelPanel(self.ui, lambda: self._parameterNode)

        self.refitTimer = qt.QTimer()
        self.refitTimer.setSingleShot(True)
        self.refitTimer.connect("timeout()", self.onRefitTimeout)

        self.ui.statsTable.setColumnCount(3)
        self.ui.statsTable.setHorizontalHeaderLabels(["Structure", "Voxels", "Volume (mL)"])
        self.ui.statsTable.horizontalHeader().setStretchLastSection(True)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.fitButton.connect("clicked(bool)", self.onFit)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.saveProbeButton.connect("clicked(bool)", self.onSaveProbe)
        self.ui.loadProbeButton.connect("clicked(bool)", self.onLoadProbe)
        self.ui.segmentEditorButton.connect("clicked(bool)", self.onOpenSegmentEditor)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.busy.cancel.set()
        self.refitTimer.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        # keep observing the painted segmentation: auto-refit also works while the Segment Editor is shown
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None

    def onSceneStartClose(self, caller, event) -> None:
        self.busy.cancel.set()
        self.refitTimer.stop()
        self._observeSegmentation(None)
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
            if self._parameterNodeGuiTag is not None:
                self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParametersModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParametersModified)
        self._onParametersModified()

    def _onParametersModified(self, caller=None, event=None) -> None:
        node = self._parameterNode
        self._observeSegmentation(node.paintedSegmentation if node else None)
        ready = bool(node and node.inputVolume and node.paintedSegmentation and node.modelReference)
        self.ui.fitButton.enabled = ready and not self.busy.running
        self.ui.fitButton.toolTip = "" if ready else "Select a volume, a painted segmentation and a model."
        self.ui.cancelButton.enabled = self.busy.running
        self.ui.saveProbeButton.enabled = self.logic.lastProbe is not None and not self.busy.running
        self.ui.loadProbeButton.enabled = (
            bool(node and node.inputVolume and node.modelReference) and not self.busy.running
        )
        self.ui.refitDelaySpinBox.enabled = bool(node and node.autoRefit)
        self.ui.segmentEditorButton.enabled = bool(node and node.inputVolume)

    # ---- auto-refit: restart a single-shot timer on every paint event; fit when painting pauses

    def _observeSegmentation(self, segmentationNode) -> None:
        if segmentationNode is self._observedSegmentation:
            return
        if self._observedSegmentation is not None:
            for event in PAINT_EVENTS:
                self.removeObserver(self._observedSegmentation, event, self.onSegmentationPainted)
        self._observedSegmentation = segmentationNode
        if segmentationNode is not None:
            for event in PAINT_EVENTS:
                self.addObserver(segmentationNode, event, self.onSegmentationPainted)

    def onSegmentationPainted(self, caller, event) -> None:
        node = self._parameterNode
        if self._writing or not node or not node.autoRefit:
            return
        self.refitTimer.start(int(node.refitDelay * 1000))

    def onRefitTimeout(self) -> None:
        if self.busy.running:
            self._refitPending = True  # paint arrived during a fit: fit again when it ends
            return
        self.onFit(auto=True)

    # ---- actions

    def onCancel(self) -> None:
        self.busy.cancel.set()
        self.ui.statusLabel.setText("Cancelling...")

    def onFit(self, checked=False, auto=False) -> None:
        if self.busy.running or not ensureDependencies():
            return
        node = self._parameterNode
        self._refitPending = False
        self.busy.start("Refitting..." if auto else "Fitting and predicting...")
        self._onParametersModified()
        try:
            self._writing = True  # prepare() creates/removes temporary nodes
            inputs = self.logic.prepare(node)
            self._writing = False
            counts = inputs.labels.counts()
            self.busy.progress(0.0, "Labelled voxels: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
            prediction = runInWorker(self.busy, self.logic.predict, node, inputs)
            self._writing = True
            result = self.logic.write(node, inputs, prediction)
            self._showResult(result)
        except Exception as exc:  # shown to the user; full trace in the log
            logging.exception("VoxelFM few-shot segmentation failed")
            self.busy.stop(f"Failed: {userMessage(exc)}")
        finally:
            self._writing = False
            if self.busy.running:
                self.busy.stop(self.ui.statusLabel.text)
            self._onParametersModified()
        if self._refitPending and node.autoRefit:
            self.refitTimer.start(int(node.refitDelay * 1000))

    def _showResult(self, result) -> None:
        self._parameterNode.outputSegmentation = result.output_node
        table = self.ui.statsTable
        table.setRowCount(len(result.stats))
        for row, stat in enumerate(result.stats):
            for col, text in enumerate((stat.name, str(stat.voxels), f"{stat.volume_ml:.2f}")):
                item = qt.QTableWidgetItem(text)
                item.setFlags(qt.Qt.ItemIsSelectable | qt.Qt.ItemIsEnabled)
                table.setItem(row, col, item)
        note = (" Warnings: " + " ".join(result.warnings)) if result.warnings else ""
        self.busy.stop(
            f"Predicted {len(result.stats)} structures into '{result.output_node.GetName()}'.{note}"
        )

    def onSaveProbe(self) -> None:
        path = qt.QFileDialog.getSaveFileName(
            slicer.util.mainWindow(),
            "Save VoxelFM segmentation probe",
            "probe.json",
            "VoxelFM probe (*.json)",
        )
        if not path:
            return
        try:
            self.ui.statusLabel.setText(f"Saved probe {self.logic.saveProbe(path)}")
        except Exception as exc:
            logging.exception("Saving the probe failed")
            slicer.util.errorDisplay(f"Could not save the probe: {userMessage(exc)}")

    def onLoadProbe(self) -> None:
        path = qt.QFileDialog.getOpenFileName(
            slicer.util.mainWindow(), "Load VoxelFM segmentation probe", "", "VoxelFM probe (*.json)"
        )
        if not path or self.busy.running or not ensureDependencies():
            return
        self.busy.start(f"Applying {path}...")
        self._onParametersModified()
        try:
            self._writing = True
            self._showResult(self.logic.applyProbeFile(self._parameterNode, path, self.busy))
        except Exception as exc:
            logging.exception("Applying the probe failed")
            self.busy.stop(f"Failed: {userMessage(exc)}")
        finally:
            self._writing = False
            self._onParametersModified()

    def onOpenSegmentEditor(self) -> None:
        node = self._parameterNode
        if not node.paintedSegmentation:
            segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "VoxelFM examples")
            segmentation.CreateDefaultDisplayNodes()
            segmentation.SetReferenceImageGeometryParameterFromVolumeNode(node.inputVolume)
            node.paintedSegmentation = segmentation
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        editor.setSegmentationNode(node.paintedSegmentation)
        setSource = getattr(editor, "setSourceVolumeNode", None) or editor.setMasterVolumeNode  # < 5.4
        setSource(node.inputVolume)


class VoxelFMSegmentLogic(ScriptedLoadableModuleLogic):
    """Thin: parameters -> VoxelFMLib.FewShotSegmentLogic with the core predictor (features + probe)."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        from VoxelFMLib.features_logic import FeaturesLogic

        self.features = FeaturesLogic()
        self._predictors = {}
        self.lastProbe = None

    def getParameterNode(self):
        return VoxelFMSegmentParameterNode(super().getParameterNode())

    def predictor(self, parameterNode):
        from VoxelFMLib.segment_core import CorePredictor

        key = (parameterNode.modelReference, parameterNode.device)
        if key not in self._predictors:  # keeps the per-volume context, so refits are fast
            self._predictors[key] = CorePredictor(self.features, *key)
        return self._predictors[key]

    def fewShot(self, parameterNode):
        from VoxelFMLib.segment_logic import FewShotSegmentLogic

        return FewShotSegmentLogic(self.predictor(parameterNode))

    def prepare(self, parameterNode):
        return self.fewShot(parameterNode).prepare(
            parameterNode.inputVolume, parameterNode.paintedSegmentation, parameterNode.mode
        )

    def predict(self, parameterNode, inputs, progress=None, cancel=None):
        return self.fewShot(parameterNode).predict(inputs, progress, cancel)

    def write(self, parameterNode, inputs, prediction):
        result = self.fewShot(parameterNode).write(
            inputs, prediction, parameterNode.inputVolume, self._outputNode(parameterNode)
        )
        self.lastProbe = result.probe
        return result

    @staticmethod
    def _outputNode(parameterNode):
        """The chosen output segmentation, or None to create a new one."""
        return parameterNode.outputSegmentation

    def saveProbe(self, path: str) -> str:
        from VoxelFMLib.segment_core import save_probe

        if self.lastProbe is None:
            raise RuntimeError("Fit a probe first.")
        return save_probe(self.lastProbe, path)

    def applyProbeFile(self, parameterNode, path: str, busy):
        from VoxelFMLib.segment_core import classes_from_probe, load_probe
        from VoxelFMLib.segment_logic import apply_labels_to_volume
        from VoxelFMLib.volume_nodes import volume_from_node

        probe = load_probe(path)
        volumeNode = parameterNode.inputVolume
        volume = volume_from_node(volumeNode)
        labels = runInWorker(busy, self.predictor(parameterNode).apply, volume, probe)
        result = apply_labels_to_volume(
            labels, volumeNode, classes_from_probe(probe), self._outputNode(parameterNode)
        )
        self.lastProbe = probe
        return result


class VoxelFMSegmentTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_fewshot_glue_with_simple_predictor()

    def test_fewshot_glue_with_simple_predictor(self):
        """Painted slices -> labels -> (threshold predictor) -> new segments; painted segments unchanged."""
        import numpy as np

        from VoxelFMLib.segment_logic import FewShotSegmentLogic

        self.delayDisplay("Few-shot glue")
        array = np.zeros((10, 20, 20), np.float32)
        array[:, 5:15, 5:15] = 100.0
        volumeNode = slicer.util.addVolumeFromArray(array, np.diag([1.5, 1.5, 3.0, 1.0]), "synthetic")
        segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "painted")
        segmentationNode.CreateDefaultDisplayNodes()
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
        segmentId = segmentationNode.GetSegmentation().AddEmptySegment("", "box")
        paint = np.zeros(array.shape, np.uint8)
        paint[4, 6:14, 6:14] = 1
        slicer.util.updateSegmentBinaryLabelmapFromArray(paint, segmentationNode, segmentId, volumeNode)

        def threshold(volume, labels, classes, progress=None, cancel=None):
            return (volume.array > 50).astype(np.uint8)

        result = FewShotSegmentLogic(threshold).run(volumeNode, segmentationNode)
        predicted = slicer.util.arrayFromSegmentBinaryLabelmap(
            result.output_node, result.segment_ids[0], volumeNode
        )
        self.assertEqual(int(predicted.sum()), int((array > 50).sum()))
        painted = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, volumeNode)
        self.assertEqual(int(painted.sum()), int(paint.sum()))
        self.delayDisplay("Test passed")
