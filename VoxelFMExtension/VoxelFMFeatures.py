"""VoxelFM Features: choose a model, extract features of a CT volume, look at them as a PCA colour volume.

Also the module that carries the shared packages (voxelfm, VoxelFMLib, VoxelFMWidgets) in the extension.
"""

from __future__ import annotations

import qt
import slicer
from slicer import vtkMRMLScalarVolumeNode
from slicer.i18n import tr as _
from slicer.parameterNodeWrapper import parameterNodeWrapper
from VoxelFMWidgets import ModelParameters, VoxelFMModuleWidget, registerSampleData, runInWorker
from VoxelFMWidgets.module import VoxelFMModule, VoxelFMModuleLogic, VoxelFMModuleTest


class VoxelFMFeatures(VoxelFMModule):
    TITLE = _("VoxelFM Features")
    HELP = _(
        "Extract VoxelFM foundation-model features of a CT volume (a frozen 3D ViT, one feature "
        "vector per 14x14x14-voxel patch) and show their first three principal components as a "
        "colour volume. Features are cached on disk, so other VoxelFM modules reuse them. The input "
        "must be a grayscale CT (labelmaps and colour volumes are refused). Features are of the CT's "
        "own voxels: moving it with a transform does not change them, and the colour volume is placed "
        "under the CT's transform so it stays on the CT (one shown before the CT got its transform "
        "stays where it was, like any other node). Each Extract adds a new colour volume. Needs 3D "
        "Slicer 5.10 or newer."
    )
    DEPENDENCIES = ()
    ACKNOWLEDGEMENT = _(
        "VoxelFM backbone by its authors; see the model card for licence terms. Sample CT: "
        "pyradiomics (BSD-3-Clause)."
    )

    def __init__(self, parent):
        super().__init__(parent)
        # the sample chest CT in the Sample Data module (this module carries the shared packages)
        slicer.app.connect("startupCompleted()", registerSampleData)


@parameterNodeWrapper
class VoxelFMFeaturesParameterNode:
    model: ModelParameters
    inputVolume: vtkMRMLScalarVolumeNode
    useCache: bool = True
    showPCA: bool = True


class VoxelFMFeaturesWidget(VoxelFMModuleWidget):
    def createLogic(self):
        return VoxelFMFeaturesLogic()

    def setupWidgets(self) -> None:
        self.features = None
        self.ui.extractButton.connect("clicked(bool)", self.onExtract)
        self.ui.saveFeaturesButton.connect("clicked(bool)", self.onSaveFeatures)

    def updateGUI(self) -> None:
        node, idle = self.parameterNode, not self.busy.running
        ready = bool(node and node.inputVolume)
        self.ui.extractButton.enabled = ready and idle
        self.ui.extractButton.toolTip = "" if ready else "Select an input volume."
        self.ui.saveFeaturesButton.enabled = self.features is not None and idle

    def onExtract(self) -> None:
        if not self.readyToRun():
            return
        with self.busy.operation("Extracting features...", "Feature extraction"):
            self.features = self.logic.extract(self.parameterNode, self.busy)
            description = self.logic.describe(self.features)
            self.ui.featuresInfoLabel.setText(description)
            self.busy.stop(f"Features ready: {description}")

    def onSaveFeatures(self) -> None:
        path = qt.QFileDialog.getSaveFileName(
            slicer.util.mainWindow(), "Save VoxelFM features", "features.npz", "Features (*.npz)"
        )
        if path and self.features is not None:
            self.ui.statusLabel.setText(f"Saved {self.features.save(path)}")


class VoxelFMFeaturesLogic(VoxelFMModuleLogic):
    """Thin: parameter node -> VoxelFMLib.FeaturesLogic."""

    parameterNodeClass = VoxelFMFeaturesParameterNode
    capability = "FeaturesLogic"

    def extract(self, parameterNode, busy):
        """Copy (main thread) -> extract (worker thread) -> PCA colour volume (main thread), then show it."""
        volumeNode = parameterNode.inputVolume
        output = self.capabilityLogic(parameterNode).run(
            volumeNode,
            cache=parameterNode.useCache,
            show_pca=parameterNode.showPCA,
            in_worker=lambda fn, *args, **kwargs: runInWorker(busy, fn, *args, **kwargs),
        )
        if output.pca_node is not None:
            slicer.util.setSliceViewerLayers(
                background=volumeNode, foreground=output.pca_node, foregroundOpacity=0.5
            )
        return output.features

    @staticmethod
    def describe(features) -> str:
        from VoxelFMLib import FeaturesLogic

        return FeaturesLogic.describe(features)


class VoxelFMFeaturesTest(VoxelFMModuleTest):
    def test_pca_volume_geometry(self):
        """A synthetic feature grid becomes a colour volume on the grid's geometry."""
        import numpy as np

        from VoxelFMLib.feature_display import create_rgb_volume_node, pca_rgb

        self.delayDisplay("PCA colour volume")
        patch = np.random.default_rng(0).normal(size=(3, 4, 5, 16)).astype(np.float32)
        node = create_rgb_volume_node(
            slicer.mrmlScene, pca_rgb(patch), np.diag([14.0, 14.0, 14.0, 1.0]), "pca"
        )
        self.assertEqual(node.GetImageData().GetDimensions(), (5, 4, 3))
        self.assertEqual(node.GetImageData().GetNumberOfScalarComponents(), 3)
        self.assertEqual(node.GetSpacing(), (14.0, 14.0, 14.0))
        self.delayDisplay("Test passed")

    def test_features_of_sample_ct(self):
        """Sample Data lung1 CT -> features with the bundled model -> a PCA volume over the CT, nothing else."""
        import numpy as np

        if self.missing("torch"):
            return
        from VoxelFMWidgets import loadSampleVolume

        from VoxelFMLib import FeaturesLogic
        from VoxelFMLib.volume_nodes import node_ijk_to_ras

        volumeNode = loadSampleVolume()
        logic = FeaturesLogic(model="voxelfm-tiny", device="cpu")
        features = logic.extract(volumeNode)
        nodes = slicer.mrmlScene.GetNumberOfNodes()
        pca = logic.show_pca(features, volumeNode)
        self.assertEqual(
            slicer.mrmlScene.GetNumberOfNodes(), nodes + 2
        )  # the colour volume + its display node
        self.assertEqual(pca.GetImageData().GetDimensions(), tuple(reversed(features.patch.shape[:3])))
        centre = features.grid_to_ras @ np.array([*(np.array(features.patch.shape[2::-1]) - 1) / 2, 1.0])
        ijk = np.linalg.inv(node_ijk_to_ras(volumeNode)) @ centre
        dims = np.array(volumeNode.GetImageData().GetDimensions())
        self.assertTrue(np.all(ijk[:3] > -0.5) and np.all(ijk[:3] < dims - 0.5), "features off the CT")
        self.delayDisplay("Test passed")
