"""VoxelFM Retrieve: "show me cases like this one" from a case library, for a whole CT or a region of it.

Build or open a library folder (the same one `voxelfm index add` / `voxelfm query` use) from the volumes loaded
in the scene or from a folder of CTs, then search with the current volume, an ROI box, a segment or a point.
The result gallery shows each similar case with its score and a thumbnail (query region beside the match);
double-click one to load the case and centre the views on the matching place.
"""

from __future__ import annotations

import tempfile
from typing import Annotated

import qt
import slicer
from slicer import (
    vtkMRMLMarkupsFiducialNode,
    vtkMRMLMarkupsROINode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
)
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
)
from VoxelFMWidgets import (
    BusyState,
    ModelPanel,
    ModelParameters,
    VoxelFMModuleWidget,
    ensureDependencies,
    modelSpec,
    runInWorker,
    userMessage,
)

QUERY_MODES = ["volume", "roi", "segment", "point"]
THUMBNAIL_PX = 160


class VoxelFMRetrieve(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "VoxelFM Retrieve"
        self.parent.categories = ["VoxelFM"]
        self.parent.dependencies = ["VoxelFMFeatures"]
        self.parent.contributors = ["VoxelFM Slicer extension contributors"]
        self.parent.helpText = (
            "Similar-case retrieval with frozen VoxelFM embeddings. Choose a case library folder, add the loaded "
            "volumes or a folder of CTs, then find the cases most similar to the query volume or to an ROI, a "
            "segment or a point in it. Double-click a result to load that case and jump to the matching place."
        )
        self.parent.acknowledgementText = (
            "VoxelFM backbone by its authors; see the model card for licence terms."
        )


@parameterNodeWrapper
class VoxelFMRetrieveParameterNode:
    model: ModelParameters
    libraryPath: str = ""
    inputVolume: vtkMRMLScalarVolumeNode
    queryMode: Annotated[str, Choice(QUERY_MODES)] = "volume"
    roiNode: vtkMRMLMarkupsROINode
    segmentation: vtkMRMLSegmentationNode
    pointNode: vtkMRMLMarkupsFiducialNode
    radius: Annotated[float, WithinRange(1.0, 200.0)] = 15.0
    k: Annotated[int, WithinRange(1, 100)] = 10
    embedding: Annotated[str, Choice(["mean", "cls"])] = "mean"


class VoxelFMRetrieveWidget(VoxelFMModuleWidget):
    def createLogic(self):
        return VoxelFMRetrieveLogic()

    def setupWidgets(self) -> None:
        self.busy = BusyState(self.ui.progressBar, self.ui.statusLabel, onChange=self.updateGUI)
        self.modelPanel = ModelPanel(self.ui.modelPanelPlaceholder, lambda: self.parameterNode)
        self.hits = []
        table = self.ui.resultsTable
        table.setColumnCount(4)
        table.setHorizontalHeaderLabels(["Thumbnail", "Case", "Score", "Location (RAS)"])
        table.setIconSize(qt.QSize(2 * THUMBNAIL_PX, THUMBNAIL_PX))
        table.setSelectionBehavior(qt.QAbstractItemView.SelectRows)
        table.horizontalHeader().setStretchLastSection(True)
        table.connect("cellDoubleClicked(int,int)", lambda row, col: self.onLoadHit(row))
        self.ui.loadHitButton.connect("clicked(bool)", lambda checked: self.onLoadHit(table.currentRow()))
        self.ui.browseLibraryButton.connect("clicked(bool)", self.onBrowseLibrary)
        self.ui.addVolumeButton.connect("clicked(bool)", lambda checked: self.onAdd(allVolumes=False))
        self.ui.addAllVolumesButton.connect("clicked(bool)", lambda checked: self.onAdd(allVolumes=True))
        self.ui.addFolderButton.connect("clicked(bool)", self.onAddFolder)
        self.ui.searchButton.connect("clicked(bool)", self.onSearch)
        self.ui.cancelButton.connect("clicked(bool)", self.busy.requestCancel)

    def cancelWork(self) -> None:
        self.busy.cancel.set()

    def updateGUI(self) -> None:
        node, idle = self.parameterNode, not self.busy.running
        library = bool(node and node.libraryPath.strip())
        mode = node.queryMode if node else "volume"
        for widgets, shown in (
            ((self.ui.roiSelector, self.ui.roiSelectorLabel), mode == "roi"),
            ((self.ui.segmentationSelector, self.ui.segmentationSelectorLabel), mode == "segment"),
            ((self.ui.segmentComboBox, self.ui.segmentComboBoxLabel), mode == "segment"),
            ((self.ui.pointSelector, self.ui.pointSelectorLabel, self.ui.radiusSpinBox), mode == "point"),
        ):
            for widget in widgets:
                widget.visible = shown
        self.ui.radiusSpinBoxLabel.visible = mode == "point"
        self.fillSegments(node.segmentation if node else None)
        hasVolume = bool(node and node.inputVolume)
        self.ui.addVolumeButton.enabled = library and hasVolume and idle
        self.ui.addAllVolumesButton.enabled = library and idle
        self.ui.addFolderButton.enabled = library and idle
        self.ui.searchButton.enabled = library and hasVolume and idle
        self.ui.cancelButton.enabled = not idle
        self.ui.loadHitButton.enabled = bool(self.hits) and idle
        self.ui.libraryStatusLabel.text = self.logic.describe(node.libraryPath) if library else ""

    def fillSegments(self, segmentationNode) -> None:
        combo = self.ui.segmentComboBox
        wanted = [] if segmentationNode is None else self.logic.segments(segmentationNode)
        if [combo.itemData(i) for i in range(combo.count)] != [sid for sid, _ in wanted]:
            combo.clear()
            for sid, name in wanted:
                combo.addItem(name, sid)

    def onBrowseLibrary(self) -> None:
        path = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), "Open or create a case library")
        if path:
            self.parameterNode.libraryPath = path

    def onAdd(self, allVolumes: bool) -> None:
        if self.busy.running or not ensureDependencies():
            return
        with self.busy.operation("Adding volumes to the library...", "Adding cases"):
            self.busy.stop(self.logic.addVolumes(self.parameterNode, allVolumes, self.busy))

    def onAddFolder(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), "Folder of CTs to add")
        if not folder or self.busy.running or not ensureDependencies():
            return
        with self.busy.operation(f"Adding {folder}...", "Adding cases"):
            self.busy.stop(self.logic.addFolder(self.parameterNode, folder, self.busy))

    def onSearch(self) -> None:
        if self.busy.running or not ensureDependencies():
            return
        segmentId = self.ui.segmentComboBox.currentData
        with self.busy.operation("Searching similar cases...", "Similar-case search"):
            result = self.logic.search(self.parameterNode, segmentId, self.busy)
            self.showResult(result)

    def showResult(self, result) -> None:
        self.hits = list(result.hits)
        table = self.ui.resultsTable
        table.setRowCount(len(self.hits))
        for row, hit in enumerate(self.hits):
            icon = qt.QTableWidgetItem()
            if hit.thumbnail:
                icon.setIcon(qt.QIcon(hit.thumbnail))
            where = ", ".join(f"{v:.1f}" for v in hit.ras) if hit.ras is not None else "whole volume"
            items = [
                icon,
                qt.QTableWidgetItem(hit.case_id),
                qt.QTableWidgetItem(f"{hit.score:.4f}"),
                qt.QTableWidgetItem(where),
            ]
            for col, item in enumerate(items):
                item.setFlags(qt.Qt.ItemIsSelectable | qt.Qt.ItemIsEnabled)
                item.setToolTip(hit.path or "added from a scene volume")
                table.setItem(row, col, item)
            table.setRowHeight(row, THUMBNAIL_PX + 4)
        table.setColumnWidth(0, 2 * THUMBNAIL_PX + 8)
        notes = (" " + " ".join(result.warnings)) if result.warnings else ""
        self.busy.stop(f"{len(self.hits)} similar case(s) for {result.query}.{notes}")

    def onLoadHit(self, row: int) -> None:
        if not 0 <= row < len(self.hits):
            return
        try:
            self.logic.loadHit(self.hits[row])
        except Exception as exc:
            slicer.util.errorDisplay(userMessage(exc))


class VoxelFMRetrieveLogic(ScriptedLoadableModuleLogic):
    """Thin: parameter node -> VoxelFMLib.RetrievalLogic (kept while the model choice stays the same)."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._spec = None
        self._retriever = None

    def getParameterNode(self):
        return VoxelFMRetrieveParameterNode(super().getParameterNode())

    def retriever(self, parameterNode):
        from VoxelFMLib.retrieval_logic import RetrievalLogic  # after ensureDependencies: imports torch

        spec = modelSpec(parameterNode.model)
        if self._retriever is None or spec != self._spec:
            self._spec = spec
            self._retriever = RetrievalLogic(spec.model, spec.device, spec.precision, spec.max_tokens)
        return self._retriever

    @staticmethod
    def describe(path: str) -> str:
        try:
            from VoxelFMLib.retrieval_logic import RetrievalLogic

            return RetrievalLogic.describe(path.strip())
        except Exception as exc:  # no library yet, or dependencies not installed: say so, never raise into Qt
            return (
                userMessage(exc)
                if "No case library" not in str(exc)
                else "New library (created on first add)."
            )

    @staticmethod
    def segments(segmentationNode) -> list[tuple[str, str]]:
        seg = segmentationNode.GetSegmentation()
        ids = [seg.GetNthSegmentID(i) for i in range(seg.GetNumberOfSegments())]
        return [(sid, seg.GetSegment(sid).GetName()) for sid in ids]

    def addVolumes(self, parameterNode, allVolumes: bool, busy: BusyState) -> str:
        """prepare (main thread: copy voxels) -> add (worker thread)."""
        retriever = self.retriever(parameterNode)
        nodes = (
            slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
            if allVolumes
            else [parameterNode.inputVolume]
        )
        sources = retriever.prepare_volumes(nodes)
        report = runInWorker(busy, retriever.add, parameterNode.libraryPath.strip(), sources)
        report.raise_failures()
        return report.summary()

    def addFolder(self, parameterNode, folder: str, busy: BusyState) -> str:
        retriever = self.retriever(parameterNode)
        report = runInWorker(busy, retriever.add_folder, parameterNode.libraryPath.strip(), folder)
        report.raise_failures()
        return report.summary()

    def search(self, parameterNode, segmentId, busy: BusyState):
        """prepare (main thread: nodes -> volume + region) -> predict + thumbnails (worker thread)."""
        retriever = self.retriever(parameterNode)
        mode = parameterNode.queryMode
        inputs = retriever.prepare_query(
            parameterNode.inputVolume,
            roi_node=parameterNode.roiNode if mode == "roi" else None,
            segmentation_node=parameterNode.segmentation if mode == "segment" else None,
            segment_id=segmentId if mode == "segment" else None,
            point_node=parameterNode.pointNode if mode == "point" else None,
            radius_mm=parameterNode.radius,
        )
        thumbnails = tempfile.mkdtemp(prefix="VoxelFMRetrieve-", dir=slicer.app.temporaryPath)
        return runInWorker(
            busy,
            retriever.predict,
            parameterNode.libraryPath.strip(),
            inputs,
            parameterNode.k,
            parameterNode.embedding,
            thumbnails,
        )

    def loadHit(self, hit) -> None:
        from VoxelFMLib.retrieval_logic import jump_slices

        view = self._retriever.load_hit(slicer.mrmlScene, hit)
        slicer.util.setSliceViewerLayers(background=view.node)
        jump_slices(slicer.mrmlScene, view.ras)


class VoxelFMRetrieveTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_library_from_scene_volumes_finds_the_copy()

    def test_library_from_scene_volumes_finds_the_copy(self):
        """Two synthetic volumes -> a library; a noisy copy of one finds it first; loading the hit reuses it."""
        import importlib.util

        import numpy as np

        if importlib.util.find_spec("torch") is None or importlib.util.find_spec("faiss") is None:
            self.delayDisplay("torch or faiss not installed: retrieval test skipped")
            return
        from VoxelFMLib.retrieval_logic import RetrievalLogic

        rng = np.random.default_rng(0)
        a = np.full((40, 48, 48), -1000.0, np.float32)
        a[5:35, 8:40, 10:38] = rng.normal(40, 30, (30, 32, 28))
        b = np.full_like(a, -1000.0)
        b[2:38, 4:44, 4:44] = rng.normal(300, 200, (36, 40, 40))
        geometry = np.diag([1.5, 1.5, 2.0, 1.0])
        nodes = [slicer.util.addVolumeFromArray(x, geometry, name) for x, name in ((a, "soft"), (b, "bone"))]
        library = tempfile.mkdtemp(prefix="VoxelFMRetrieveTest-", dir=slicer.app.temporaryPath) + "/cases"
        logic = RetrievalLogic(model="voxelfm-tiny", device="cpu")
        self.assertEqual(len(logic.add_volume_nodes(library, nodes).added), 2)
        query = slicer.util.addVolumeFromArray(
            a + rng.normal(0, 20, a.shape).astype(np.float32), geometry, "q"
        )
        result = logic.run_query(library, query, k=2)
        self.assertEqual(result.hits[0].case_id, "soft")
        self.assertIs(logic.load_hit(slicer.mrmlScene, result.hits[0]).node, nodes[0])
        self.delayDisplay("Test passed")
