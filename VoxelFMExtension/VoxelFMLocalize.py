"""VoxelFM Localize: find named landmarks in a new scan from one or two annotated reference scans.

Place a point list on a reference scan (one named control point per landmark), pick the target volume and
press "Find landmarks": the same points are found in the target by VoxelFM feature matching, checked by the
patient geometry (left stays left) and refined on the image. Results become a NEW point list (yours are never
changed) with a confidence per point; the table shows the distance to any existing point of the same name and
double-clicking a row jumps the slice views there. A localisation probe (`voxelfm fit-probe --task
localisation`) can be applied instead, and corner landmarks can be turned into a box (markups ROI).
"""

from __future__ import annotations

import qt
import slicer
from slicer import vtkMRMLMarkupsFiducialNode, vtkMRMLScalarVolumeNode
from slicer.i18n import tr as _
from slicer.parameterNodeWrapper import parameterNodeWrapper
from VoxelFMWidgets import ModelParameters, VoxelFMModuleWidget, runInWorker
from VoxelFMWidgets.module import VoxelFMModule, VoxelFMModuleLogic, VoxelFMModuleTest
from VoxelFMWidgets.tables import setColumns, setRow

PROBE_FILTER = "VoxelFM localisation probe (*.json)"
COLUMNS = ("Landmark", "Confidence", "Distance (mm)", "R", "A", "S")


class VoxelFMLocalize(VoxelFMModule):
    TITLE = _("VoxelFM Localize")
    HELP = _(
        "Landmarks from one example. Place a point list on a reference scan (control point labels "
        "are the landmark names; a blank label becomes '<list name>-<number>'), choose the target "
        "volume and press 'Find landmarks'. Found points go into a new point list with a confidence "
        "(0-1) in each point's description; your point lists are never modified. Each Find uses the "
        "reference points and scans as they are now (moved, added or renamed points, a transform on "
        "the reference scan). Finding again writes into the previous result list only while it is "
        "exactly as VoxelFM left it: once you have moved, added, removed, renamed or described a "
        "point in it (or put it under a transform), it is kept as you left it and the new result goes "
        "into a new list (the status line says so). If the target is removed or changed while the "
        "landmarks are being found, nothing is written. Labelmaps and colour volumes are refused as "
        "the target or a reference scan. Double-click a row to jump to the point."
    )


@parameterNodeWrapper
class VoxelFMLocalizeParameterNode:
    model: ModelParameters
    targetVolume: vtkMRMLScalarVolumeNode
    referenceVolume: vtkMRMLScalarVolumeNode
    referencePoints: vtkMRMLMarkupsFiducialNode
    secondReferenceVolume: vtkMRMLScalarVolumeNode
    secondReferencePoints: vtkMRMLMarkupsFiducialNode
    comparePoints: vtkMRMLMarkupsFiducialNode
    outputPoints: vtkMRMLMarkupsFiducialNode
    boxCorners: str = ""


class VoxelFMLocalizeWidget(VoxelFMModuleWidget):
    defaultVolumeParameter = "targetVolume"

    def createLogic(self):
        return VoxelFMLocalizeLogic()

    def setupWidgets(self) -> None:
        self.rows = []
        setColumns(self.ui.resultsTable, COLUMNS)
        self.ui.resultsTable.connect("cellDoubleClicked(int,int)", self.onJumpToRow)
        self.ui.findButton.connect("clicked(bool)", lambda checked: self.onFind())
        self.ui.loadProbeButton.connect("clicked(bool)", lambda checked: self.onLoadProbe())
        self.ui.boxButton.connect("clicked(bool)", lambda checked: self.onMakeBox())

    def updateGUI(self) -> None:
        node, idle = self.parameterNode, not self.busy.running
        ready = bool(node and node.targetVolume and node.referenceVolume and node.referencePoints)
        self.ui.findButton.enabled = ready and idle
        self.ui.findButton.toolTip = (
            "" if ready else _("Select the target, a reference scan and its point list.")
        )
        self.ui.loadProbeButton.enabled = bool(node and node.targetVolume) and idle
        self.ui.boxButton.enabled = bool(node and node.outputPoints) and idle

    def onFind(self) -> None:
        if not self.readyToRun():
            return
        with self.busy.operation(_("Finding landmarks..."), _("Landmark localisation")):
            self.showResult(self.logic.findLandmarks(self.parameterNode, self.busy))

    def onLoadProbe(self) -> None:
        path = qt.QFileDialog.getOpenFileName(
            slicer.util.mainWindow(), _("Load localisation probe"), "", PROBE_FILTER
        )
        if not path or not self.readyToRun():
            return
        with self.busy.operation(_("Applying {path}...").format(path=path), _("Applying the probe")):
            self.showResult(self.logic.applyProbe(self.parameterNode, path, self.busy))

    def onMakeBox(self) -> None:
        with self.busy.operation(_("Making a box..."), _("Box from landmarks")):
            roi = self.logic.makeBox(self.parameterNode)
            self.busy.stop(_("Created box '{name}'.").format(name=roi.GetName()))

    def showResult(self, output) -> None:
        self.parameterNode.outputPoints = output.node
        points = output.result.points
        self.rows = [points.ras[n].copy() for n in range(len(points))]
        self.ui.resultsTable.setRowCount(len(points))
        for row, name in enumerate(points.names):
            dist = output.distances.get(name)
            cells = (
                name,
                f"{output.result.confidence[row]:.2f}",
                "" if dist is None else f"{dist:.1f}",
                *(f"{v:.1f}" for v in points.ras[row]),
            )
            setRow(self.ui.resultsTable, row, cells)
        message = _("Found {n} landmarks in '{name}' ({s:.1f} s).").format(
            n=len(points), name=output.node.GetName(), s=output.result.seconds
        )
        self.busy.stop(f"{message} {output.note}".strip())

    def onJumpToRow(self, row: int, column: int) -> None:
        from VoxelFMLib.markups_nodes import jump_slices_to

        if 0 <= row < len(self.rows):
            jump_slices_to(slicer.mrmlScene, self.rows[row])


class VoxelFMLocalizeLogic(VoxelFMModuleLogic):
    """Thin: parameter node -> VoxelFMLib.LocalisationLogic (which nodes are used, what is cached and where the
    result goes are decided there, see ``LocalizeChoice``; it keeps the references' templates, so finding the
    landmarks in another target is fast)."""

    parameterNodeClass = VoxelFMLocalizeParameterNode
    capability = "LocalisationLogic"

    def findLandmarks(self, parameterNode, busy):
        """prepare (main thread) -> predict (worker thread) -> write (main thread)."""
        from VoxelFMLib.localize_logic import LocalizeChoice

        return self.capabilityLogic(parameterNode).find(
            LocalizeChoice.of(parameterNode),
            slicer.mrmlScene,
            in_worker=lambda fn, *args: runInWorker(busy, fn, *args),
        )

    def applyProbe(self, parameterNode, path: str, busy):
        from VoxelFMLib.localize_logic import LocalizeChoice

        return self.capabilityLogic(parameterNode).apply_saved_probe(
            LocalizeChoice.of(parameterNode), path, busy.pumpingProgress, busy.cancel
        )

    def makeBox(self, parameterNode):
        from VoxelFMLib.localize_logic import LocalizeChoice

        return self.capabilityLogic(parameterNode).make_box(LocalizeChoice.of(parameterNode))


class VoxelFMLocalizeTest(VoxelFMModuleTest):
    """Runs in Slicer (slicer_add_python_unittest). The logic's own tests run in pytest on real MRML, in a bare
    scene and in trame-slicer's SlicerApp scene (Testing/python/test_slicer_localize.py)."""

    def test_sample_ct_landmarks_found_in_a_shifted_copy(self):
        """Three points placed on the Sample Data chest CT (the nodule, the centre of the bone and of the body on
        the middle slices) -> the bundled model (cpu) finds them in a noisy copy moved 25 mm within 3 mm each,
        in a NEW point list; the reference point list is unchanged."""
        import numpy as np
        import vtk

        if self.missing("torch"):
            return
        from VoxelFMWidgets.sample_data import loadSampleVolume

        from VoxelFMLib import LocalisationLogic
        from VoxelFMLib.volume_nodes import node_ijk_to_ras

        reference = loadSampleVolume()  # lung1 through the Sample Data module (sha256-checked)
        nodule = self.sampleLabel()
        array = slicer.util.arrayFromVolume(reference).astype(np.float32)
        ijkToRas = node_ijk_to_ras(reference)

        def ras(kji) -> np.ndarray:
            return (ijkToRas @ np.array([kji[2], kji[1], kji[0], 1.0]))[:3]

        middle = array.shape[0] // 2
        slab = np.zeros(array.shape, bool)
        slab[middle - 3 : middle + 3] = True
        truth = {
            "nodule": ras(np.argwhere(slicer.util.arrayFromVolume(nodule) > 0).mean(axis=0)),
            "bone centre": ras(np.argwhere(slab & (array > 300)).mean(axis=0)),
            "body centre": ras(np.argwhere(slab & (array > -300)).mean(axis=0)),
        }
        points = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "landmarks")
        for name, position in truth.items():
            points.AddControlPoint(vtk.vtkVector3d(*position), name)
        placed = [tuple(points.GetNthControlPointPosition(n)) for n in range(len(truth))]

        shift = np.array([12.5, -7.5, 20.0])  # mm: a landmark left where it was misses by 25 mm
        moved = ijkToRas.copy()
        moved[:3, 3] += shift
        noisy = array + np.random.default_rng(1).normal(0.0, 10.0, array.shape).astype(np.float32)
        target = slicer.util.addVolumeFromArray(noisy, moved, "lung1 shifted")
        out = LocalisationLogic(model="voxelfm-tiny", device="cpu").run(target, [(reference, points)])
        self.assertNotEqual(out.node.GetID(), points.GetID())
        self.assertEqual(out.node.GetNumberOfControlPoints(), len(truth))
        for n in range(out.node.GetNumberOfControlPoints()):
            name = out.node.GetNthControlPointLabel(n)
            found = np.array(out.node.GetNthControlPointPosition(n))
            error = float(np.linalg.norm(found - (truth[name] + shift)))
            self.assertLess(error, 3.0, f"{name} found {error:.1f} mm from where it moved to")
        self.assertEqual([tuple(points.GetNthControlPointPosition(n)) for n in range(len(truth))], placed)
        self.delayDisplay("Test passed")
