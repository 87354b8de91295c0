"""The widget lifecycle every VoxelFM module shares, written once.

A module widget subclasses ``VoxelFMModuleWidget`` and overrides only ``createLogic()``, ``setupWidgets()``
(connections, extra widgets such as the model panel), ``updateGUI()`` (enable/disable from the parameter
node), ``cancelWork()`` if it runs anything long, and its own handlers. This class loads
``Resources/UI/<ModuleName>.ui``, observes the scene's StartClose/EndClose, binds the parameter node to the
GUI (``connectGui`` on the top widget, so widgets loaded into placeholders are bound too) and calls
``updateGUI()`` whenever a parameter changes.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import qt
import slicer
import vtk
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin

from VoxelFMLib.slicer_version import app_version, unsupported_reason
from VoxelFMWidgets.model_panel import ModelPanel

# Packages that onReload drops from sys.modules, so the module's re-import loads all of them fresh.
RELOADED_PACKAGES = ("voxelfm", "VoxelFMLib", "VoxelFMWidgets")


def forgetPackages(packages: tuple[str, ...] = RELOADED_PACKAGES) -> list[str]:
    """Remove the packages and their submodules from sys.modules (names returned).

    Dropping them (rather than importlib.reload one by one) means the next import rebuilds every
    ``from X import Y`` between our own modules, so no module keeps a stale class.
    """
    names = sorted(n for n in sys.modules if any(n == p or n.startswith(p + ".") for p in packages))
    for name in names:
        del sys.modules[name]
    return names


def unsupportedVersionMessage() -> str:
    """ "" on a supported Slicer, else the message (also logged once) for this Slicer and Python."""
    message = unsupported_reason(app_version(slicer.app), tuple(sys.version_info[:3]))
    if message:
        logging.error(message)
    return message


class VoxelFMModuleWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Base of the VoxelFM module widgets (see the module docstring for what subclasses override)."""

    # Parameter (a volume node field) set to the scene's first scalar volume when empty; None: no such field.
    defaultVolumeParameter: str | None = "inputVolume"

    def __init__(self, parent=None) -> None:
        self.logic = None
        self.ui = None
        self.uiWidget = None
        self.modelPanel: ModelPanel | None = None  # set by setupWidgets() of modules that pick a model
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        # mixin first: without a parent, ScriptedLoadableModuleWidget.__init__ already runs setup() (observers)
        VTKObservationMixin.__init__(self)
        ScriptedLoadableModuleWidget.__init__(self, parent)

    # ---- what subclasses override

    def createLogic(self):
        raise NotImplementedError(f"{type(self).__name__} must return its module logic")

    def setupWidgets(self) -> None:
        """Connections and extra widgets; runs after the .ui is loaded, before the parameter node is bound."""

    def updateGUI(self) -> None:
        """Refresh what depends on the parameters or on running work (button states, tooltips)."""

    def cancelWork(self) -> None:
        """Stop running work and timers (scene closing, module unloading)."""

    # ---- lifecycle

    @property
    def parameterNode(self) -> Any:
        return self._parameterNode

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        problem = unsupportedVersionMessage()
        if problem:  # an older Slicer: one clear message instead of a GUI that fails later
            label = qt.QLabel(problem)
            label.wordWrap = True
            self.layout.addWidget(label)
            self.layout.addStretch(1)
            return
        self.uiWidget = slicer.util.loadUI(self.resourcePath(f"UI/{self.moduleName}.ui"))
        self.layout.addWidget(self.uiWidget)
        self.ui = slicer.util.childWidgetVariables(self.uiWidget)
        self.uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = self.createLogic()
        self.setupWidgets()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        if self.ui is not None:  # setup() ran
            self.cancelWork()
        self.removeObservers()

    def enter(self) -> None:
        if self.ui is not None:  # None: unsupported Slicer version, no GUI was built
            self.initializeParameterNode()

    def exit(self) -> None:
        self._unbindParameterNode()

    def onSceneStartClose(self, caller, event) -> None:
        self.cancelWork()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def onReload(self) -> None:
        """Reload voxelfm, VoxelFMLib and VoxelFMWidgets too, then the module itself."""
        worker = sys.modules.get("VoxelFMLib.worker")
        if worker is not None:  # the reloaded module would start a second worker thread
            worker.shutdown()
        forgetPackages()
        ScriptedLoadableModuleWidget.onReload(self)

    # ---- parameter node

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        node = self._parameterNode
        field = self.defaultVolumeParameter
        if field and getattr(node, field) is None:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first:
                setattr(node, field, first)

    def setParameterNode(self, parameterNode) -> None:
        self._unbindParameterNode()
        self._parameterNode = parameterNode
        if parameterNode is not None:
            self._parameterNodeGuiTag = parameterNode.connectGui(self.uiWidget)
            self.addObserver(parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        self.onParameterNodeModified()

    def onParameterNodeModified(self, caller=None, event=None) -> None:
        if self.modelPanel is not None:
            self.modelPanel.updateGUI(self._parameterNode.model if self._parameterNode else None)
        self.updateGUI()

    def _unbindParameterNode(self) -> None:
        node = self._parameterNode
        if node is None:
            return
        if self._parameterNodeGuiTag is not None:
            node.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
        if self.hasObserver(node, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified):
            self.removeObserver(node, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
