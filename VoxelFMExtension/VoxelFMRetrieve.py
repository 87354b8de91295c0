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
from slicer.i18n import tr as _
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from VoxelFMWidgets import ModelParameters, VoxelFMModuleWidget, runInWorker, userMessage
from VoxelFMWidgets.module import VoxelFMModule, VoxelFMModuleLogic, VoxelFMModuleTest
from VoxelFMWidgets.server_library import ServerLibraryChoice
from VoxelFMWidgets.tables import setColumns, setRow

QUERY_MODES = ["volume", "roi", "segment", "point"]
THUMBNAIL_PX = 160


class VoxelFMRetrieve(VoxelFMModule):
    TITLE = _("VoxelFM Retrieve")
    HELP = _(
        "Similar-case retrieval with frozen VoxelFM embeddings. Choose a case library folder, add "
        "the loaded volumes or a folder of CTs, then find the cases most similar to the query "
        "volume or to an ROI, a segment or a point in it (the mode's ROI, segment or point must be "
        "selected). 'Add all loaded volumes' adds the CT volumes and names what it skipped (labelmaps, "
        "colour volumes such as VoxelFM Features' PCA). Double-click a result to load that case and "
        "jump to the matching place; a case already shown is not loaded again."
    )
    ACKNOWLEDGEMENT = _(
        "VoxelFM backbone by its authors; see the model card for licence terms. Sample CT: "
        "pyradiomics (BSD-3-Clause)."
    )


@parameterNodeWrapper
class VoxelFMRetrieveParameterNode:
    model: ModelParameters
    libraryPath: str = ""
    serverLibrary: str = ""  # with Compute: server, the id of one of the server's case libraries
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
        self.hits = []
        table = self.ui.resultsTable
        setColumns(table, ("Thumbnail", "Case", "Score", "Location (RAS)"))
        table.setIconSize(qt.QSize(2 * THUMBNAIL_PX, THUMBNAIL_PX))
        table.setSelectionBehavior(qt.QAbstractItemView.SelectRows)
        table.connect("cellDoubleClicked(int,int)", lambda row, col: self.onLoadHit(row))
        self.ui.loadHitButton.connect("clicked(bool)", lambda checked: self.onLoadHit(table.currentRow()))
        self.ui.browseLibraryButton.connect("clicked(bool)", self.onBrowseLibrary)
        folder = (self.ui.libraryPathLineEdit, self.ui.libraryPathLineEditLabel, self.ui.browseLibraryButton)
        combo, refresh = self.ui.serverLibraryComboBox, self.ui.refreshLibrariesButton
        ids = (combo, refresh, self.ui.serverLibraryComboBoxLabel)
        self.serverLibrary = ServerLibraryChoice(lambda: self.parameterNode, ids, folder)
        self.ui.addVolumeButton.connect("clicked(bool)", lambda checked: self.onAdd(allVolumes=False))
        self.ui.addAllVolumesButton.connect("clicked(bool)", lambda checked: self.onAdd(allVolumes=True))
        self.ui.addFolderButton.connect("clicked(bool)", self.onAddFolder)
        self.ui.searchButton.connect("clicked(bool)", self.onSearch)

    def updateGUI(self) -> None:
        node, idle = self.parameterNode, not self.busy.running
        onServer = self.serverLibrary.update()
        library = bool(self.serverLibrary.library())
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
        self.ui.loadHitButton.enabled = bool(self.hits) and idle
        if onServer:
            self.ui.libraryStatusLabel.text = self.serverLibrary.status
        else:
            self.ui.libraryStatusLabel.text = self.logic.describe(node.libraryPath) if library else ""

    def fillSegments(self, segmentationNode) -> None:
        combo = self.ui.segmentComboBox
        wanted = [] if segmentationNode is None else self.logic.segments(segmentationNode)
        if [combo.itemData(i) for i in range(combo.count)] != [sid for sid, name in wanted]:
            combo.clear()
            for sid, name in wanted:
                combo.addItem(name, sid)

    def onBrowseLibrary(self) -> None:
        path = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), "Open or create a case library")
        if path:
            self.parameterNode.libraryPath = path

    def ensureReady(self) -> bool:
        """Dependencies installed and the model this library loads available (asks before a download)."""
        return self.readyToRun(fallbackModel=self.libraryModel)

    def libraryModel(self) -> str | None:
        """The model the chosen library loads; None for an unreadable library (said why, never raised into Qt)."""
        try:
            return "" if self.serverLibrary.server() else self.logic.libraryModel(self.parameterNode)
        except Exception as exc:
            slicer.util.errorDisplay(userMessage(exc))
            return None

    def onAdd(self, allVolumes: bool) -> None:
        if not self.ensureReady():
            return
        with self.busy.operation("Adding volumes to the library...", "Adding cases"):
            library = self.serverLibrary.library()
            self.busy.stop(self.logic.addVolumes(self.parameterNode, library, allVolumes, self.busy))

    def onAddFolder(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), "Folder of CTs to add")
        if not folder or not self.ensureReady():
            return
        with self.busy.operation(f"Adding {folder}...", "Adding cases"):
            library = self.serverLibrary.library()
            self.busy.stop(self.logic.addFolder(self.parameterNode, library, folder, self.busy))

    def onSearch(self) -> None:
        if not self.ensureReady():
            return
        segmentId = self.ui.segmentComboBox.currentData
        with self.busy.operation("Searching similar cases...", "Similar-case search"):
            library = self.serverLibrary.library()
            result = self.logic.search(self.parameterNode, library, segmentId, self.busy)
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
            cells = (icon, hit.case_id, f"{hit.score:.4f}", where)
            setRow(table, row, cells, toolTip=hit.path or "added from a scene volume")
            table.setRowHeight(row, THUMBNAIL_PX + 4)
        table.setColumnWidth(0, 2 * THUMBNAIL_PX + 8)
        notes = (" " + " ".join(result.warnings)) if result.warnings else ""
        self.busy.stop(f"{len(self.hits)} similar case(s) for {result.query}.{notes}")

    def onLoadHit(self, row: int) -> None:
        if not 0 <= row < len(self.hits):
            return
        hit = self.hits[row]
        with self.busy.operation(f"Opening case {hit.case_id}...", "Opening the case"):
            self.logic.loadHit(hit, self.busy)
            self.busy.stop(f"Case {hit.case_id} opened.")


class VoxelFMRetrieveLogic(VoxelFMModuleLogic):
    """Thin: parameter node -> VoxelFMLib.RetrievalLogic."""

    parameterNodeClass = VoxelFMRetrieveParameterNode
    capability = "RetrievalLogic"

    @staticmethod
    def libraryModel(parameterNode) -> str:
        """The model an existing library loads when the panel names none ("" = the default policy)."""
        from VoxelFMLib.retrieval_logic import RetrievalLogic

        path = parameterNode.libraryPath.strip()
        return RetrievalLogic.library_model(path) if path else ""

    @staticmethod
    def describe(path: str) -> str:
        try:
            from voxelfm.retrieval.library import NoLibraryError
            from VoxelFMLib.retrieval_logic import RetrievalLogic
        except Exception as exc:  # dependencies not installed: say so, never raise into Qt
            return userMessage(exc)
        try:
            return RetrievalLogic.describe(path.strip())
        except NoLibraryError:
            return "New library (created on first add)."
        except Exception as exc:  # a damaged or unreadable library: say so, never raise into Qt
            return userMessage(exc)

    @staticmethod
    def segments(segmentationNode) -> list[tuple[str, str]]:
        seg = segmentationNode.GetSegmentation()
        ids = [seg.GetNthSegmentID(i) for i in range(seg.GetNumberOfSegments())]
        return [(sid, seg.GetSegment(sid).GetName()) for sid in ids]

    def addVolumes(self, parameterNode, library: str, allVolumes: bool, busy) -> str:
        """prepare (main thread: copy voxels) -> add (worker thread)."""
        retriever = self.capabilityLogic(parameterNode)
        if allVolumes:
            prepared = retriever.prepare_scene_volumes(slicer.mrmlScene)
            sources, note = prepared.sources, prepared.note
        else:
            sources, note = retriever.prepare_volumes([parameterNode.inputVolume]), ""
        report = runInWorker(busy, retriever.add, library, sources)
        report.raise_failures()
        return " ".join(filter(None, (report.summary(), note)))

    def addFolder(self, parameterNode, library: str, folder: str, busy) -> str:
        retriever = self.capabilityLogic(parameterNode)
        report = runInWorker(busy, retriever.add_folder, library, folder)
        report.raise_failures()
        return report.summary()

    def search(self, parameterNode, library: str, segmentId, busy):
        """prepare (main thread: nodes -> volume + region) -> predict + thumbnails (worker thread)."""
        retriever = self.capabilityLogic(parameterNode)
        inputs = retriever.prepare(
            parameterNode.inputVolume,
            mode=parameterNode.queryMode,
            roi_node=parameterNode.roiNode,
            segmentation_node=parameterNode.segmentation,
            segment_id=segmentId,
            point_node=parameterNode.pointNode,
            radius_mm=parameterNode.radius,
        )
        folder = tempfile.mkdtemp(prefix="VoxelFMRetrieve-", dir=slicer.app.temporaryPath)
        return runInWorker(
            busy, retriever.predict, library, inputs, parameterNode.k, parameterNode.embedding, folder
        )

    def loadHit(self, hit, busy) -> None:
        from VoxelFMLib.retrieval_logic import jump_slices

        logic, fetched = self.current, None  # the logic that found the hit
        if logic.loaded_node(slicer.mrmlScene, hit) is None:  # a server case downloads on the worker thread
            fetched = runInWorker(busy, logic.fetch_hit, hit)
        view = logic.load_hit(slicer.mrmlScene, hit, fetched)
        slicer.util.setSliceViewerLayers(background=view.node)
        jump_slices(slicer.mrmlScene, view.ras)


class VoxelFMRetrieveTest(VoxelFMModuleTest):
    """Runs in Slicer (slicer_add_python_unittest). The logic's own tests run in pytest on real MRML, in a bare
    scene and in trame-slicer's SlicerApp scene (Testing/python/test_slicer_retrieval.py)."""

    def test_altered_sample_ct_retrieves_its_source(self):
        """The two sample chest CTs -> a temporary library (bundled model, cpu); a cropped, noisy copy of the
        first finds it at rank 1, loading that hit shows its node again, and the query leaves no nodes behind."""
        from pathlib import Path

        import numpy as np

        if self.missing("torch", "faiss"):
            return
        from VoxelFMWidgets.sample_data import loadSampleVolume

        from VoxelFMLib import RetrievalLogic
        from VoxelFMLib.sample_data import prepare_files, sample_source
        from VoxelFMLib.volume_nodes import node_ijk_to_ras

        volumeNode = loadSampleVolume()  # lung1 through the Sample Data module (sha256-checked)
        otherNode = slicer.util.loadVolume(str(prepare_files(sample_source(case="lung2")).image))
        folder = tempfile.mkdtemp(prefix="VoxelFMRetrieveTest-", dir=slicer.app.temporaryPath)
        library = Path(folder) / "cases"
        logic = RetrievalLogic(model="voxelfm-tiny", device="cpu")
        report = logic.add_volume_nodes(library, [volumeNode, otherNode])
        self.assertEqual((len(report.added), len(report.failed)), (2, 0))
        self.assertEqual(RetrievalLogic.library_model(library), "voxelfm-tiny")

        # the altered copy: 2 slices and 24 columns / rows cut off each side, 25 HU of noise, same place
        array = slicer.util.arrayFromVolume(volumeNode).astype(np.float32)[2:-2, 24:-24, 24:-24]
        array += np.random.default_rng(0).normal(0.0, 25.0, array.shape).astype(np.float32)
        crop = np.eye(4)
        crop[:3, 3] = (24, 24, 2)  # (i, j, k) of the copy's first voxel in the original grid
        query = slicer.util.addVolumeFromArray(array, node_ijk_to_ras(volumeNode) @ crop, "lung1 altered")
        nodes = slicer.mrmlScene.GetNumberOfNodes()
        result = logic.run_query(library, query, k=2)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodes)  # no stray nodes
        self.assertEqual(len(result.hits), 2)
        self.assertGreater(result.hits[0].score, result.hits[1].score)
        self.assertIs(logic.load_hit(slicer.mrmlScene, result.hits[0]).node, volumeNode)  # rank 1: lung1
        self.assertIs(logic.load_hit(slicer.mrmlScene, result.hits[1]).node, otherNode)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodes)  # both were shown already
        self.delayDisplay("Test passed")
