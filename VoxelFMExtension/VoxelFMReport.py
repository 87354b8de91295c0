"""VoxelFM Report: a first draft of the report of the current CT, where every sentence says where it came from.

Sources (each optional): findings probes (fit-probe), the segments of a segmentation node (volume, largest
diameter, centroid), similar cases of a case library with reports, a trained report model (report-train).
The draft goes into a NEW text node (saved with the scene) shown in the editor below; edit it freely, a new
draft never overwrites edited text. Put the cursor in a sentence to see its evidence; double-click an item
to jump to the segment or open the similar case. Save writes REPORT.txt and REPORT.json.
"""

from __future__ import annotations

import qt
import slicer
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTextNode
from slicer.i18n import tr as _
from slicer.parameterNodeWrapper import parameterNodeWrapper
from VoxelFMWidgets import ModelParameters, VoxelFMModuleWidget, runInWorker, userMessage
from VoxelFMWidgets.module import VoxelFMModule, VoxelFMModuleLogic, VoxelFMModuleTest
from VoxelFMWidgets.server_library import ServerLibraryChoice

from VoxelFMLib.model_service import PerModel

PROBE_FILTER = "VoxelFM findings probe (*.json)"
LIBRARY_FILTER = "VoxelFM case library (*)"


class VoxelFMReport(VoxelFMModule):
    TITLE = _("VoxelFM Report")
    HELP = _(
        "Draft a structured CT report from findings probes, segment measurements and similar cases "
        "with reports. Every sentence carries its evidence; select a sentence to see it. Drafting "
        "again refreshes the current draft in place only while nobody edited it; once you edited "
        "the text, the new draft goes into a new text node and your text is kept as it is. Empty "
        "segments are left out of the draft and named in the status line. Opening a similar case "
        "again shows the node already loaded. Labelmaps and colour volumes cannot be the CT."
    )


@parameterNodeWrapper
class VoxelFMReportParameterNode:
    model: ModelParameters
    inputVolume: vtkMRMLScalarVolumeNode
    segmentation: vtkMRMLSegmentationNode
    probePaths: str = ""  # one probe file per line
    libraryPath: str = ""
    serverLibrary: str = ""  # with Compute: server, the id of one of the server's case libraries ("" = none)
    vlmRun: str = ""
    template: str = ""
    reportNode: vtkMRMLTextNode


class VoxelFMReportWidget(VoxelFMModuleWidget):
    def createLogic(self):
        return VoxelFMReportLogic()

    def setupWidgets(self) -> None:
        self.targets = []
        self.ui.addProbeButton.connect("clicked(bool)", self.onAddProbe)
        self.ui.clearProbesButton.connect("clicked(bool)", self.onClearProbes)
        self.ui.browseLibraryButton.connect("clicked(bool)", self.onBrowseLibrary)
        folder = (self.ui.libraryPathLineEdit, self.ui.libraryPathLineEditLabel, self.ui.browseLibraryButton)
        combo, refresh = self.ui.serverLibraryComboBox, self.ui.refreshLibrariesButton
        ids = (combo, refresh, self.ui.serverLibraryComboBoxLabel)
        self.serverLibrary = ServerLibraryChoice(lambda: self.parameterNode, ids, folder, optional=True)
        self.ui.draftButton.connect("clicked(bool)", self.onDraft)
        self.ui.saveButton.connect("clicked(bool)", self.onSave)
        self.ui.reportTextEdit.connect("textChanged()", self.onTextEdited)
        self.ui.reportTextEdit.connect("cursorPositionChanged()", self.onCursorMoved)
        self.ui.evidenceList.connect("itemDoubleClicked(QListWidgetItem*)", self.onEvidenceChosen)

    def updateGUI(self) -> None:
        node, idle = self.parameterNode, not self.busy.running
        self.serverLibrary.update()
        self.ui.draftButton.enabled = bool(node and node.inputVolume) and idle
        self.ui.saveButton.enabled = bool(node and node.reportNode) and idle
        self.ui.probeList.clear()
        for path in self.logic.probes(node):
            self.ui.probeList.addItem(path)
        self.showReportNode(node.reportNode if node else None)

    def showReportNode(self, textNode) -> None:
        text = textNode.GetText() if textNode else ""
        if self.ui.reportTextEdit.toPlainText() != text:
            wasBlocked = self.ui.reportTextEdit.blockSignals(True)
            self.ui.reportTextEdit.setPlainText(text)
            self.ui.reportTextEdit.blockSignals(wasBlocked)

    def onAddProbe(self) -> None:
        paths = qt.QFileDialog.getOpenFileNames(
            slicer.util.mainWindow(), "Add findings probes", "", PROBE_FILTER
        )
        if paths:
            self.parameterNode.probePaths = "\n".join([*self.logic.probes(self.parameterNode), *paths])

    def onClearProbes(self) -> None:
        self.parameterNode.probePaths = ""

    def onBrowseLibrary(self) -> None:
        path = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), "Open a VoxelFM case library")
        if path:
            self.parameterNode.libraryPath = path

    def onDraft(self) -> None:
        node = self.parameterNode
        library = self.serverLibrary.library()
        if node is None or not self.readyToRun(needsModel=self.logic.needsModel(node, library)):
            return  # probes, a case library and a report model need the backbone; measurements do not
        with self.busy.operation("Drafting the report...", "Report drafting"):
            result = self.logic.draft(self.parameterNode, library, self.busy)
            self.parameterNode.reportNode = result.text_node
            kept = f" Your edited '{result.kept_node.GetName()}' was kept." if result.kept_node else ""
            warned = (" Notes: " + " ".join(result.draft.warnings)) if result.draft.warnings else ""
            self.busy.stop(
                f"Drafted {len(result.draft.sentences)} sentences into '{result.text_node.GetName()}'.{kept}{warned}"
            )

    def onTextEdited(self) -> None:
        node = self.parameterNode.reportNode if self.parameterNode else None
        if node is not None:
            node.SetText(self.ui.reportTextEdit.toPlainText())  # the user's edit lives in the text node

    def onCursorMoved(self) -> None:
        node = self.parameterNode.reportNode if self.parameterNode else None
        self.ui.evidenceList.clear()
        self.targets = self.logic.evidenceAt(node, self.ui.reportTextEdit.textCursor().position())
        for line, _target in self.targets:
            self.ui.evidenceList.addItem(line)

    def onEvidenceChosen(self, item) -> None:
        row = self.ui.evidenceList.row(item)
        target = self.targets[row][1] if 0 <= row < len(self.targets) else None
        if target is None:
            return
        try:
            self.logic.goTo(target)
        except Exception as exc:
            slicer.util.errorDisplay(userMessage(exc))

    def onSave(self) -> None:
        node = self.parameterNode.reportNode
        path = qt.QFileDialog.getSaveFileName(
            slicer.util.mainWindow(), "Save report", f"{node.GetName()}.txt", "Text (*.txt)"
        )
        if path:
            with self.busy.operation("Saving...", "Saving the report"):
                txt, js = self.logic.save(node, path)
                self.busy.stop(f"Saved {txt} and {js}")


class VoxelFMReportLogic(VoxelFMModuleLogic):
    """Thin: parameter node -> VoxelFMLib.ReportLogic, kept while the template stays the same too."""

    parameterNodeClass = VoxelFMReportParameterNode
    capability = "ReportLogic"

    def __init__(self) -> None:
        super().__init__()
        self._template = ""

    @staticmethod
    def probes(parameterNode) -> list[str]:
        return [
            p.strip() for p in (parameterNode.probePaths if parameterNode else "").splitlines() if p.strip()
        ]

    def needsModel(self, parameterNode, library: str) -> bool:
        """Findings probes, a case library and a report model run the backbone; segment measurements do not.
        ``library``: a folder, or with a server one of its library ids ("" = none)."""
        return bool(self.probes(parameterNode) or library or parameterNode.vlmRun.strip())

    def drafter(self, parameterNode):
        template = parameterNode.template.strip()
        if template != self._template:  # another template: a new drafter (the pipeline holds its template)
            self._template, self.perModel = template, PerModel.of(self.capability, template=template or None)
        return self.capabilityLogic(parameterNode)

    def draft(self, parameterNode, library: str, busy):
        """prepare (main thread) -> predict (worker thread) -> write (main thread)."""
        drafter = self.drafter(parameterNode)
        volumeNode = parameterNode.inputVolume
        segmentations = [parameterNode.segmentation] if parameterNode.segmentation else []
        inputs = drafter.prepare(
            volumeNode,
            self.probes(parameterNode),
            segmentations,
            library or None,
            parameterNode.vlmRun.strip() or None,
        )
        draft = runInWorker(busy, drafter.predict, inputs)
        return drafter.write(inputs, draft, volumeNode, parameterNode.reportNode)

    def evidenceAt(self, textNode, position: int) -> list:
        """(line shown, jump target or None) for the sentence at the cursor."""
        from VoxelFMLib.report_logic import ReportLogic
        from VoxelFMLib.report_nodes import draft_of, is_report_node

        if not is_report_node(textNode):
            return []
        index = ReportLogic.sentence_index(textNode, position)
        if index is None:
            return []
        return [
            (_evidenceLine(e), ReportLogic.target_of(e)) for e in draft_of(textNode).sentences[index].evidence
        ]

    def goTo(self, target) -> None:
        from VoxelFMLib.report_logic import ReportLogic

        if target.kind == "segment":
            ReportLogic.jump_to_segment(slicer.mrmlScene, target)
        else:
            server = getattr(self.current, "server", None)  # a server library's case is fetched from it
            slicer.util.setSliceViewerLayers(
                background=ReportLogic.open_case(slicer.mrmlScene, target, server)
            )

    def save(self, textNode, path: str):
        from VoxelFMLib.report_logic import ReportLogic

        return ReportLogic.save(textNode, path)


def _evidenceLine(e: dict) -> str:
    kind = e.get("kind")
    if kind == "probe":
        return f"probe {e['probe']}: {e['finding']} {e['call']} (p = {e['probability']:.2f})"
    if kind == "measurement":
        value = e["value"]
        shown = ", ".join(f"{v:.1f}" for v in value) if isinstance(value, list) else f"{value:.2f}"
        return f"segment {e['segment']}: {e['quantity']} {shown} {e['unit']}"
    if kind == "neighbour":
        return (
            f"similar case {e['case_id']} (score {e['score']:.3f}, weight {e['weight']:.2f}): {e['sentence']}"
        )
    return f"{kind}: {e.get('run', '')}"


class VoxelFMReportTest(VoxelFMModuleTest):
    """Runs in Slicer (slicer_add_python_unittest). The logic's own tests run in pytest on real MRML, in a bare
    scene and in trame-slicer's SlicerApp scene (Testing/python/test_slicer_report.py)."""

    def test_measurements_of_a_painted_segment_are_its_segment_statistics(self):
        """The sample CT's nodule painted as a segment -> a draft (bundled model, cpu) whose volume, largest
        diameter and centroid are Slicer's Segment Statistics of that segment; an edited draft is kept."""
        import numpy as np

        if self.missing("torch"):
            return
        import SegmentStatistics
        from VoxelFMWidgets.sample_data import loadSampleVolume

        from VoxelFMLib import ReportLogic

        volumeNode = loadSampleVolume()  # lung1 through the Sample Data module (sha256-checked)
        painted = (slicer.util.arrayFromVolume(self.sampleLabel()) > 0).astype(np.uint8)
        segmentation, segmentId = self.paintedSegmentation(volumeNode, painted, "nodule", "findings")

        nodes = slicer.mrmlScene.GetNumberOfNodes()
        logic = ReportLogic(model="voxelfm-tiny", device="cpu")
        first = logic.run(volumeNode, segmentation_nodes=[segmentation])
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodes + 1)  # the text node only
        measured = {
            e["quantity"]: e["value"]
            for s in first.draft.sentences
            for e in s.evidence
            if e.get("kind") == "measurement" and e.get("segment_id") == segmentId
        }

        statistics = SegmentStatistics.SegmentStatisticsLogic()
        parameters = statistics.getParameterNode()
        parameters.SetParameter("Segmentation", segmentation.GetID())
        for key in ("centroid_ras", "feret_diameter_mm"):
            parameters.SetParameter(f"LabelmapSegmentStatisticsPlugin.{key}.enabled", "True")
        statistics.computeStatistics()
        stats = statistics.getStatistics()

        def stat(key):
            return stats[segmentId, f"LabelmapSegmentStatisticsPlugin.{key}"]

        self.assertEqual(int(stat("voxel_count")), int(painted.sum()))
        self.assertAlmostEqual(measured["volume"], stat("volume_cm3"), places=6)  # mL = cm3
        self.assertAlmostEqual(measured["largest_diameter"], stat("feret_diameter_mm"), delta=0.01)
        np.testing.assert_allclose(measured["centroid"], stat("centroid_ras"), atol=0.01)
        self.assertIn(f"volume {measured['volume']:.1f} mL", first.text_node.GetText())

        first.text_node.SetText(first.text_node.GetText() + "\nMy own impression.")
        second = logic.run(volumeNode, segmentation_nodes=[segmentation], text_node=first.text_node)
        self.assertIsNot(second.text_node, first.text_node)
        self.assertTrue(first.text_node.GetText().endswith("My own impression."))
        self.delayDisplay("Test passed")
