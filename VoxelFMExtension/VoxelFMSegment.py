"""VoxelFM Segment: few-shot segmentation from a few painted slices (or scribbles) per structure.

Paint one segment per structure in the Segment Editor, press "Fit and predict": a small probe is fitted on
VoxelFM features of the painted voxels and every voxel is classified. Predictions become NEW segments (the
painted ones are never changed), with a table of voxel counts and volumes. With auto-refit on, the probe is
refitted when painting pauses (VoxelFMLib.auto_refit decides when). The probe can be saved and applied to
other volumes.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Annotated

import qt
import slicer
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from VoxelFMWidgets import ModelParameters, VoxelFMModuleWidget, openSegmentEditor, runInWorker
from VoxelFMWidgets.module import VoxelFMModule, VoxelFMModuleLogic, VoxelFMModuleTest
from VoxelFMWidgets.segment_editor import segmentEditorUndoSaver
from VoxelFMWidgets.tables import setColumns, setRow

from VoxelFMLib.auto_refit import OBSERVED_EVENTS, AutoRefit

MODES = ("slices", "scribbles")
PROBE_FILTER = "VoxelFM probe (*.json)"


class VoxelFMSegment(VoxelFMModule):
    TITLE = _("VoxelFM Segment")
    HELP = _(
        "Few-shot segmentation with VoxelFM features. Create one segment per structure and paint it "
        "on a few slices (workflow 'slices': the rest of each painted slice counts as background) "
        "or as scribbles (workflow 'scribbles': also paint a segment named 'background'). Then "
        "press 'Fit and predict'. Predicted structures appear as new segments; your painted "
        "segments are never modified, and Undo in the Segment Editor removes a prediction without "
        "your last stroke. Fitting again into the same output replaces only predicted segments nobody "
        "edited: a predicted segment you corrected is yours from then on, kept exactly as it is, and "
        "the new prediction is added beside it. Labelmaps and colour volumes cannot be the CT."
    )


@parameterNodeWrapper
class VoxelFMSegmentParameterNode:
    model: ModelParameters
    inputVolume: vtkMRMLScalarVolumeNode
    paintedSegmentation: vtkMRMLSegmentationNode
    mode: Annotated[str, Choice(list(MODES))] = "slices"
    outputSegmentation: vtkMRMLSegmentationNode
    autoRefit: bool = False
    refitDelay: Annotated[float, WithinRange(0.5, 10.0)] = 1.5


class VoxelFMSegmentWidget(VoxelFMModuleWidget):
    def createLogic(self):
        return VoxelFMSegmentLogic()

    def setupWidgets(self) -> None:
        self.observedSegmentation = None
        self.refitTimer = qt.QTimer()
        self.refitTimer.setSingleShot(True)
        self.autoRefit = AutoRefit(self.refitTimer, fit=lambda: self.onFit(auto=True))
        self.refitTimer.connect("timeout()", self.autoRefit.timeout)
        setColumns(self.ui.statsTable, ("Structure", "Voxels", "Volume (mL)"))
        self.ui.fitButton.connect("clicked(bool)", lambda checked: self.onFit())
        self.ui.saveProbeButton.connect("clicked(bool)", self.onSaveProbe)
        self.ui.loadProbeButton.connect("clicked(bool)", self.onLoadProbe)
        self.ui.segmentEditorButton.connect("clicked(bool)", self.onOpenSegmentEditor)

    def cancelWork(self) -> None:
        super().cancelWork()
        self.autoRefit.scene_closed()

    def updateGUI(self) -> None:
        node, idle = self.parameterNode, not self.busy.running
        # keep observing after exit(): auto-refit also works while the Segment Editor is shown
        self.observeSegmentation(node.paintedSegmentation if node else None)
        if node:
            self.autoRefit.configure(node.autoRefit, node.refitDelay)
        hasVolume = bool(node and node.inputVolume)
        ready = hasVolume and bool(node.paintedSegmentation)
        self.ui.fitButton.enabled = ready and idle
        self.ui.fitButton.toolTip = "" if ready else "Select a volume and a painted segmentation."
        self.ui.saveProbeButton.enabled = self.logic.hasProbe() and idle
        self.ui.loadProbeButton.enabled = hasVolume and idle
        self.ui.refitDelaySpinBox.enabled = bool(node and node.autoRefit)
        self.ui.segmentEditorButton.enabled = hasVolume

    def observeSegmentation(self, segmentationNode) -> None:
        """Watch the painted segmentation; AutoRefit keeps only content changes (its content stamp)."""
        if segmentationNode is self.observedSegmentation:
            return
        for event in OBSERVED_EVENTS:
            if self.observedSegmentation is not None:
                self.removeObserver(self.observedSegmentation, event, self.onSegmentationEvent)
            if segmentationNode is not None:
                self.addObserver(segmentationNode, event, self.onSegmentationEvent)
        self.observedSegmentation = segmentationNode
        self.autoRefit.watch(segmentationNode)

    def onSegmentationEvent(self, caller, event) -> None:
        self.autoRefit.segmentation_event()

    def onFit(self, auto: bool = False) -> None:
        if not self.readyToRun():
            return
        message = "Refitting..." if auto else "Fitting and predicting..."
        with self.autoRefit.fitting(), self.busy.operation(message, "Few-shot segmentation"):
            self.showResult(self.logic.fitAndPredict(self.parameterNode, self.busy, self.autoRefit.writing))

    def onLoadProbe(self) -> None:
        path = qt.QFileDialog.getOpenFileName(
            slicer.util.mainWindow(), "Load VoxelFM segmentation probe", "", PROBE_FILTER
        )
        if not path or not self.readyToRun():
            return
        with self.autoRefit.fitting(), self.busy.operation(f"Applying {path}...", "Applying the probe"):
            self.showResult(self.logic.applyProbe(self.parameterNode, path, self.busy))

    def onSaveProbe(self) -> None:
        path = qt.QFileDialog.getSaveFileName(
            slicer.util.mainWindow(), "Save VoxelFM segmentation probe", "probe.json", PROBE_FILTER
        )
        if path:
            with self.busy.operation("Saving the probe...", "Saving the probe"):
                self.busy.stop(f"Saved probe {self.logic.saveProbe(path)}")

    def showResult(self, result) -> None:
        self.parameterNode.outputSegmentation = result.output_node
        self.ui.statsTable.setRowCount(len(result.stats))
        for row, stat in enumerate(result.stats):
            setRow(self.ui.statsTable, row, (stat.name, str(stat.voxels), f"{stat.volume_ml:.2f}"))
        note = (" Warnings: " + " ".join(result.warnings)) if result.warnings else ""
        if result.kept_segments:
            names = ", ".join(f"'{name}'" for name in result.kept_segments)
            note += f" Your corrected segment(s) {names} were kept as they are."
        self.busy.stop(
            f"Predicted {len(result.stats)} structures into '{result.output_node.GetName()}'.{note}"
        )

    def onOpenSegmentEditor(self) -> None:
        node = self.parameterNode
        if not node.paintedSegmentation:
            # imported on use, like the capability logics: it needs the voxelfm packages installed
            from VoxelFMLib.segmentation_nodes import create_examples_segmentation

            node.paintedSegmentation = create_examples_segmentation(node.inputVolume)
        openSegmentEditor(node.paintedSegmentation, node.inputVolume)


class VoxelFMSegmentLogic(VoxelFMModuleLogic):
    """Thin: parameter node -> VoxelFMLib.FewShotSegmentLogic (it holds the per-volume context, so refits
    are fast)."""

    parameterNodeClass = VoxelFMSegmentParameterNode
    capability = "FewShotSegmentLogic"

    def fitAndPredict(self, parameterNode, busy, writing=nullcontext):
        """prepare (main thread) -> predict (worker thread) -> write (main thread), with one segmenter.

        ``writing``: context manager factory around our own changes to segmentations (auto-refit ignores them).
        """
        segmenter = self.capabilityLogic(parameterNode)
        volumeNode = parameterNode.inputVolume
        with writing():
            inputs = segmenter.prepare(volumeNode, parameterNode.paintedSegmentation, parameterNode.mode)
        prediction = runInWorker(busy, segmenter.predict, inputs)
        with writing():  # an undo state first, so the Segment Editor's Undo keeps the user's last stroke
            return segmenter.write(
                inputs, prediction, volumeNode, parameterNode.outputSegmentation, segmentEditorUndoSaver()
            )

    def applyProbe(self, parameterNode, path: str, busy):
        """Runs on the main thread (it reads and writes nodes); progress keeps the GUI and Cancel alive."""
        return self.capabilityLogic(parameterNode).apply_probe(
            parameterNode.inputVolume,
            path,
            parameterNode.outputSegmentation,
            busy.pumpingProgress,
            busy.cancel,
            segmentEditorUndoSaver(),
        )

    def hasProbe(self) -> bool:
        return self.current is not None and self.current.last_probe is not None

    def saveProbe(self, path: str) -> str:
        if not self.hasProbe():
            raise RuntimeError("Fit a probe first.")
        return self.current.save_probe(path)


class _RecordingTimer:
    def __init__(self) -> None:
        self.starts: list[int] = []

    def start(self, milliseconds: int) -> None:
        self.starts.append(milliseconds)

    def stop(self) -> None:
        pass


class VoxelFMSegmentTest(VoxelFMModuleTest):
    """Runs in Slicer (slicer_add_python_unittest). The logic's own tests run in pytest, in a bare MRML scene and
    in trame-slicer's SlicerApp scene (Testing/python)."""

    def test_auto_refit_follows_content_only(self):
        """Renaming or recolouring a segment starts no refit; painting does."""
        import numpy as np

        array = np.zeros((10, 20, 20), np.float32)
        volumeNode = slicer.util.addVolumeFromArray(array, np.diag([1.5, 1.5, 3.0, 1.0]), "synthetic")
        paint = np.zeros(array.shape, np.uint8)
        paint[4, 6:14, 6:14] = 1
        segmentationNode, segmentId = self.paintedSegmentation(volumeNode, paint, "box")
        timer = _RecordingTimer()
        refit = AutoRefit(timer, fit=lambda: None, enabled=True)
        refit.watch(segmentationNode)
        tags = [segmentationNode.AddObserver(e, refit.segmentation_event) for e in OBSERVED_EVENTS]
        segment = segmentationNode.GetSegmentation().GetSegment(segmentId)
        segment.SetName("renamed")
        segment.SetColor(0.2, 0.4, 0.6)
        segmentationNode.CreateClosedSurfaceRepresentation()
        self.assertEqual(timer.starts, [])
        paint[5, 6:14, 6:14] = 1
        slicer.util.updateSegmentBinaryLabelmapFromArray(paint, segmentationNode, segmentId, volumeNode)
        self.assertTrue(timer.starts)
        for tag in tags:
            segmentationNode.RemoveObserver(tag)
        self.delayDisplay("Test passed")

    def test_fewshot_on_sample_ct(self):
        """Sample Data lung1 CT, one painted slice of the nodule -> the bundled model segments the rest."""
        import numpy as np

        if self.missing("torch"):
            return
        from VoxelFMWidgets.sample_data import loadSampleVolume

        from VoxelFMLib import FewShotSegmentLogic

        volumeNode = loadSampleVolume()  # through the Sample Data module (sha256-checked)
        truth = slicer.util.arrayFromVolume(self.sampleLabel()) > 0
        painted = np.zeros(truth.shape, np.uint8)
        k = int(np.argmax(truth.sum(axis=(1, 2))))
        painted[k] = truth[k]
        segmentationNode, segmentId = self.paintedSegmentation(volumeNode, painted, "nodule")
        nodes = slicer.mrmlScene.GetNumberOfNodes()
        result = FewShotSegmentLogic(model="voxelfm-tiny", device="cpu").run(volumeNode, segmentationNode)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodes + 2)  # the output node + its display node
        predicted = slicer.util.arrayFromSegmentBinaryLabelmap(
            result.output_node, result.segment_ids[0], volumeNode
        ).astype(bool)
        self.assertTrue((predicted & truth).any(), "the prediction misses the nodule")
        kept = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, volumeNode)
        self.assertEqual(int(kept.sum()), int(painted.sum()))  # the painted segment is unchanged
        self.delayDisplay("Test passed")
