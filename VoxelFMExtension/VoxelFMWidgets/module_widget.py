"""The widget lifecycle every VoxelFM module shares, written once.

A module widget subclasses ``VoxelFMModuleWidget`` and overrides only ``createLogic()``, ``setupWidgets()``
(its own connections and widgets), ``updateGUI()`` (enable/disable from the parameter node), ``cancelWork()``
if it has more to stop than the busy state, and its own handlers. This class loads
``Resources/UI/<ModuleName>.ui``, observes the scene's StartClose/EndClose, binds the parameter node to the
GUI (``connectGui`` on the top widget, so widgets loaded into placeholders are bound too) and calls
``updateGUI()`` whenever a parameter changes. Where the .ui has them, it also builds the busy state
(``progressBar``, ``statusLabel``, ``cancelButton``) and the model panel (``modelPanelPlaceholder``).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

import qt
import slicer
import vtk
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin

from VoxelFMLib.case_images import first_ct_volume
from VoxelFMLib.parameter_binding import GuiBinding
from VoxelFMLib.slicer_version import app_version, unsupported_reason
from VoxelFMWidgets.busy import BusyState
from VoxelFMWidgets.dependencies import ensureDependencies
from VoxelFMWidgets.model_panel import PLACEHOLDER, ModelPanel

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
        self.busy: BusyState | None = None  # built when the .ui has a progressBar and a statusLabel
        self.modelPanel: ModelPanel | None = None  # built when the .ui has a modelPanelPlaceholder
        self._parameterNode = None
        # one connectGui per parameter-node wrapper (VoxelFMLib.parameter_binding)
        self._guiBinding = GuiBinding()
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
        if self.busy is not None:
            self.busy.cancel.set()

    # ---- what subclasses use

    def currentVolume(self):
        """The module's input volume (the ``defaultVolumeParameter`` field), None without a parameter node."""
        field = self.defaultVolumeParameter
        return getattr(self._parameterNode, field) if field and self._parameterNode else None

    def readyToRun(self, fallbackModel: str | Callable[[], str | None] = "", needsModel: bool = True) -> bool:
        """Nothing running, dependencies installed, the chosen model available (asks before a download).

        ``fallbackModel``: see ``ModelPanel.ensureModelReady``; a callable is asked only once the dependencies
        are installed (None from it: not ready). ``needsModel=False``: work that runs without the backbone.
        """
        if self._parameterNode is None or (self.busy is not None and self.busy.running):
            return False
        if not ensureDependencies():
            return False
        if not needsModel or self.modelPanel is None:
            return True
        fallback = fallbackModel() if callable(fallbackModel) else fallbackModel
        return fallback is not None and self.modelPanel.ensureModelReady(fallback)

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
        self._buildSharedWidgets()
        self.setupWidgets()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()

    def _buildSharedWidgets(self) -> None:
        ui = self.ui
        progressBar, statusLabel = getattr(ui, "progressBar", None), getattr(ui, "statusLabel", None)
        if progressBar is not None and statusLabel is not None:
            self.busy = BusyState(progressBar, statusLabel, onChange=self._updateAllGUI)
            cancelButton = getattr(ui, "cancelButton", None)
            if cancelButton is not None:
                cancelButton.connect("clicked(bool)", self.busy.requestCancel)
        placeholder = getattr(ui, PLACEHOLDER, None)
        if placeholder is not None:
            self.modelPanel = ModelPanel(
                placeholder, lambda: self.parameterNode, self.currentVolume, self.busy
            )

    def cleanup(self) -> None:
        if self.ui is not None:  # setup() ran
            self.cancelWork()
        self.removeObservers()
        self._guiBinding.unbind()

    def enter(self) -> None:
        if self.ui is not None:  # None: unsupported Slicer version, no GUI was built
            self.initializeParameterNode()

    def exit(self) -> None:
        # stop reacting to parameter changes while hidden; the GUI stays connected to the same wrapper, so
        # enter() does not connect it again (each connectGui adds an observer disconnectGui keeps on 5.10)
        self._removeParameterObserver()

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
            first = first_ct_volume(slicer.mrmlScene)  # never a labelmap or colour volume
            if first:
                setattr(node, field, first)

    def setParameterNode(self, parameterNode) -> None:
        if parameterNode is not self._parameterNode:
            self._removeParameterObserver()
        self._parameterNode = parameterNode
        self._guiBinding.bind(parameterNode, self.uiWidget)  # connects only for another wrapper
        if parameterNode is not None and not self.hasObserver(
            parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified
        ):
            self.addObserver(parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        self.onParameterNodeModified()

    def onParameterNodeModified(self, caller=None, event=None) -> None:
        if self.modelPanel is not None:
            self.modelPanel.updateGUI(self._parameterNode.model if self._parameterNode else None)
        self._updateAllGUI()

    def _updateAllGUI(self) -> None:
        cancelButton = getattr(self.ui, "cancelButton", None)
        if cancelButton is not None and self.busy is not None:
            cancelButton.enabled = self.busy.running
        self.updateGUI()

    def _removeParameterObserver(self) -> None:
        node = self._parameterNode
        if node is not None and self.hasObserver(
            node, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified
        ):
            self.removeObserver(node, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
