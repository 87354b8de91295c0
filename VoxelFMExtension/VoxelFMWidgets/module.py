"""The module class, module logic and self-test base every VoxelFM module shares, written once.

A module file keeps only what is its own: its title and help text, its parameter node class, which
VoxelFMLib capability logic it drives, its widget handlers and its self-tests.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
)

from VoxelFMLib.model_service import PerModel
from VoxelFMLib.parameter_binding import WrapperCache
from VoxelFMWidgets.model_panel import modelSpec, serverChoice

CONTRIBUTORS = ["VoxelFM Slicer extension contributors"]


class VoxelFMModule(ScriptedLoadableModule):
    """Module metadata shared by every VoxelFM module: category, contributors, acknowledgement.

    Subclasses set ``TITLE`` and ``HELP`` (translated); ``DEPENDENCIES`` is VoxelFMFeatures by default, the
    module that carries the shared packages.
    """

    TITLE = ""
    HELP = ""
    DEPENDENCIES: tuple[str, ...] = ("VoxelFMFeatures",)
    ACKNOWLEDGEMENT = ""

    def __init__(self, parent) -> None:
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = self.TITLE
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "VoxelFM")]
        self.parent.dependencies = list(self.DEPENDENCIES)
        self.parent.contributors = CONTRIBUTORS
        self.parent.helpText = self.HELP
        self.parent.acknowledgementText = self.ACKNOWLEDGEMENT or _(
            "VoxelFM backbone by its authors; see the model card for licence terms."
        )


class VoxelFMModuleLogic(ScriptedLoadableModuleLogic):
    """Parameter node -> one VoxelFMLib capability logic, kept while the model choice stays the same.

    Subclasses set ``parameterNodeClass`` (their @parameterNodeWrapper class) and ``capability`` (the name
    of the VoxelFMLib logic, imported on first use: after the module's dependency check, as it imports
    torch); "" for a module without a model.
    """

    parameterNodeClass: Any = None
    capability: str = ""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.perModel: PerModel | None = PerModel.of(self.capability) if self.capability else None
        self._wrappers = WrapperCache(lambda node: self.parameterNodeClass(node))

    def getParameterNode(self):
        """The typed wrapper of the module's parameter node: the same object for the same node (see
        VoxelFMLib.parameter_binding: a new wrapper per call would pile up GUI observers on Slicer 5.10)."""
        return self._wrappers.get(super().getParameterNode())

    def capabilityLogic(self, parameterNode):
        """The capability logic for the parameter node's model choice (rebuilt when the choice changed)."""
        return self.perModel.get(modelSpec(parameterNode.model), serverChoice())

    @property
    def current(self):
        """The capability logic last built (None before the first use, and for a module without a model)."""
        return self.perModel.current if self.perModel is not None else None


class VoxelFMModuleTest(ScriptedLoadableModuleTest):
    """Self-test base: every ``test_*`` method runs in a cleared scene, in the order they are defined."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        for name in [n for n in type(self).__dict__ if n.startswith("test_")]:
            self.setUp()
            self.currentTest = name
            getattr(self, name)()

    def missing(self, *packages: str) -> bool:
        """True (and says so) when a Python package the test needs is not installed: the test is skipped."""
        absent = [p for p in packages if importlib.util.find_spec(p) is None]
        if absent:
            test = getattr(self, "currentTest", self._testMethodName)
            self.delayDisplay(f"{', '.join(absent)} not installed: {test} skipped")
        return bool(absent)

    @staticmethod
    def sampleLabel():
        """The nodule label of the sample chest CT (lung1), as a labelmap node."""
        from VoxelFMLib.sample_data import prepare_files, sample_source

        return slicer.util.loadLabelVolume(str(prepare_files(sample_source()).label))

    @staticmethod
    def paintedSegmentation(volumeNode, mask: np.ndarray, segmentName: str, nodeName: str = "painted"):
        """(segmentation node, segment id): ``mask`` (k, j, i of the volume) painted as one segment."""
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", nodeName)
        node.CreateDefaultDisplayNodes()
        node.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
        segmentId = node.GetSegmentation().AddEmptySegment("", segmentName)
        slicer.util.updateSegmentBinaryLabelmapFromArray(mask, node, segmentId, volumeNode)
        return node, segmentId
