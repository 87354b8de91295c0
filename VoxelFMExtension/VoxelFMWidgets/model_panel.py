"""The one "model" panel every VoxelFM module embeds, and the one parameter pack behind it.

Resources/UI/ModelPanel.ui is loaded into a placeholder widget of the module .ui (``modelPanelPlaceholder``).
Its id/path line edit, device and precision combo boxes and token-budget spin box carry the dynamic property
``SlicerParameterName`` = ``model.<member>``: parameterNodeWrapper resolves such dotted names into the
parameterPack member (``_checkParamName`` / ``splitPossiblyDottedName`` in Slicer's
Base/Python/slicer/parameterNodeWrapper), so ``connectGui`` on the module's top widget binds them like any
other field. The rest is drawn from ``VoxelFMLib.model_panel_state`` (Qt-free, tested): the registry combo box
(choosing an entry writes its id into ``model.model``; empty: the default-model policy), the chosen model's
state, the download button (consent, progress, cancel; sha256 checked), the offline instructions and the token
budget's estimated time and memory for the module's current volume. A token budget of 0 (the default) means
"auto": the machine's budget, ``voxelfm.features.tiling.default_max_tokens()``, the core's and the CLI's default
(``VoxelFMLib.token_budget.resolve_max_tokens``); the spin box shows it as "auto (N)", so a scene saved on one
computer uses the budget of the computer it is opened on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import qt
import slicer
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterPack

from voxelfm.features.spec import DEVICES, PRECISIONS
from VoxelFMWidgets.busy import BusyState, runInWorker
from VoxelFMWidgets.messages import userMessage

if TYPE_CHECKING:
    from VoxelFMLib.model_service import ModelSpec

UI_FILE = "ModelPanel.ui"  # the .ui this file's self.ui names come from (checked by test_slicer_static)
# the widget of a module .ui that the module widget base loads this panel into
PLACEHOLDER = "modelPanelPlaceholder"
CHECKPOINT_FILTER = "VoxelFM checkpoints (*.safetensors *.pth *.json *.yaml);;All files (*)"


@parameterPack
class ModelParameters:
    model: str = ""  # registry id or local checkpoint file / folder
    device: Annotated[str, Choice(DEVICES)] = "auto"
    precision: Annotated[str, Choice(PRECISIONS)] = "auto"
    maxTokens: Annotated[int, WithinRange(0, 65536)] = 0  # tile budget in patch tokens; 0 = auto (machine's)


def modelSpec(parameters: ModelParameters) -> ModelSpec:
    """The Qt-free description of the chosen model that VoxelFMLib's logic classes take."""
    from VoxelFMLib.model_service import ModelSpec
    from VoxelFMLib.token_budget import resolve_max_tokens

    return ModelSpec(
        model=parameters.model.strip(),
        device=parameters.device,
        precision=parameters.precision,
        max_tokens=resolve_max_tokens(parameters.maxTokens),  # 0: the machine's budget
    )


def serverChoice():
    """The "Compute" choice kept in Slicer's settings (never in the scene): a ServerChoice, or None for this
    computer (also while VoxelFM's Python packages are not installed yet)."""
    try:
        from VoxelFMLib import server_compute as sc
    except ImportError:
        return None
    settings = slicer.app.settings()
    values = [
        str(settings.value(name, "") or "") for name in (sc.SETTING_COMPUTE, sc.SETTING_URL, sc.SETTING_KEY)
    ]
    return sc.server_choice(*values)


def modelPanelUiPath() -> Path:
    """ModelPanel.ui in the Resources folder beside this package (source tree and installed extension)."""
    return Path(__file__).resolve().parent.parent / "Resources" / "UI" / UI_FILE


class ModelPanel:
    """Loads ModelPanel.ui into ``placeholder`` and keeps it in step with the ``model`` pack of the node.

    ``volumeNode()``: the module's current input volume (for the budget estimate); ``busy``: the module's
    BusyState, so a download shows in its progress bar and its Cancel button stops it.
    """

    CUSTOM_ITEM = 1  # combo box row of "Custom (id or file below)", right after the default entry

    def __init__(
        self,
        placeholder,
        parameterNode: Callable[[], Any],
        volumeNode: Callable[[], Any] | None = None,
        busy: BusyState | None = None,
    ) -> None:
        self._parameterNode = parameterNode  # the module's current parameter node (or None)
        self._volumeNode = volumeNode or (lambda: None)
        self.busy = busy
        self._state = None
        self._status = None
        self.widget = slicer.util.loadUI(str(modelPanelUiPath()))
        layout = placeholder.layout()
        if layout is None:
            layout = qt.QVBoxLayout(placeholder)
        layout.addWidget(self.widget)
        self.ui = slicer.util.childWidgetVariables(self.widget)
        self.ui.modelComboBox.connect("activated(int)", self.onRegistryChosen)
        self.ui.browseModelButton.connect("clicked(bool)", self.onBrowse)
        self.ui.downloadModelButton.connect("clicked(bool)", lambda checked: self.ensureModelReady())
        self.ui.downloadModelButton.visible = False
        self._showAutoBudget()
        try:
            self._loadServerSettings()
        except ImportError as exc:  # before VoxelFM's Python packages are installed: this computer only
            logging.debug("VoxelFM server settings not available yet: %s", exc)
        self.ui.computeComboBox.connect("currentIndexChanged(int)", lambda index: self._saveServerSettings())
        self.ui.serverUrlLineEdit.connect("editingFinished()", self._saveServerSettings)
        self.ui.serverKeyLineEdit.connect("editingFinished()", self._saveServerSettings)
        self.ui.testConnectionButton.connect("clicked(bool)", lambda checked: self.onTestConnection())

    def _loadServerSettings(self) -> None:
        """Compute choice, server URL and key from Slicer's settings (per user; never written to the scene)."""
        from VoxelFMLib.server_compute import COMPUTE_CHOICES, SETTING_COMPUTE, SETTING_KEY, SETTING_URL

        settings = slicer.app.settings()
        compute = str(settings.value(SETTING_COMPUTE, "local") or "local")
        self.ui.computeComboBox.setCurrentIndex(
            COMPUTE_CHOICES.index(compute) if compute in COMPUTE_CHOICES else 0
        )
        self.ui.serverUrlLineEdit.text = str(settings.value(SETTING_URL, "") or "")
        self.ui.serverKeyLineEdit.text = str(settings.value(SETTING_KEY, "") or "")
        self._showServerFields()

    def _saveServerSettings(self) -> None:
        from VoxelFMLib.server_compute import COMPUTE_CHOICES, SETTING_COMPUTE, SETTING_KEY, SETTING_URL

        settings = slicer.app.settings()
        settings.setValue(SETTING_COMPUTE, COMPUTE_CHOICES[self.ui.computeComboBox.currentIndex])
        settings.setValue(SETTING_URL, self.ui.serverUrlLineEdit.text.strip())
        settings.setValue(SETTING_KEY, self.ui.serverKeyLineEdit.text.strip())
        self._showServerFields()

    def _showServerFields(self) -> None:
        onServer = self.ui.computeComboBox.currentIndex == 1
        for name in (
            "serverUrlLineEdit",
            "serverKeyLineEdit",
            "testConnectionButton",
            "connectionStatusLabel",
        ):
            getattr(self.ui, name).enabled = onServer

    def onTestConnection(self) -> None:
        """One line: the server's version when the URL, protocol and key are right, else what is wrong."""
        from VoxelFMLib.server_compute import check_connection

        self._saveServerSettings()
        with slicer.util.tryWithErrorDisplay("VoxelFM: connection test failed.", waitCursor=True):
            result = check_connection(self.ui.serverUrlLineEdit.text, self.ui.serverKeyLineEdit.text)
            self.ui.connectionStatusLabel.setText(result.text)

    def _showAutoBudget(self) -> None:
        """The spin box's value 0 reads "auto (N)": N is this machine's budget (the core's default)."""
        try:
            from VoxelFMLib.token_budget import resolve_max_tokens
        except ImportError as exc:  # an incomplete install: the spin box still says "auto"
            logging.debug("VoxelFM token budget not available yet: %s", exc)
            return
        self.ui.maxTokensSpinBox.specialValueText = f"auto ({resolve_max_tokens(0)})"

    def state(self):
        """The Qt-free panel state, or None while its Python packages are not installed yet."""
        if self._state is None:
            try:
                from VoxelFMLib.model_panel_state import ModelPanelState

                self._state = ModelPanelState()
                self._fillRegistry()
            except (ImportError, OSError, ValueError) as exc:
                logging.debug("VoxelFM model panel not ready yet: %s", exc)
                self.ui.modelStatusLabel.setText(
                    "Models are listed once VoxelFM's Python packages are installed."
                )
                return None
        return self._state

    def _fillRegistry(self) -> None:
        combo = self.ui.modelComboBox
        combo.clear()
        for reference, label in self._state.choices():
            combo.addItem(label, reference)
            if reference == "":
                combo.addItem("Custom (id or file below)")  # no data: shown for a path or an unregistered id

    def updateGUI(self, parameters: ModelParameters | None) -> None:
        """Show the entry, state and budget for the current parameters (no "activated": not a user choice)."""
        state = self.state()
        if parameters is None or state is None:
            return
        reference = parameters.model.strip()
        index = self.ui.modelComboBox.findData(reference)
        self.ui.modelComboBox.setCurrentIndex(index if index >= 0 else self.CUSTOM_ITEM)
        try:
            self._status = state.status(reference)
        except Exception as exc:  # a broken registry must not break the module
            self._status = None
            self.ui.modelStatusLabel.setText(userMessage(exc))
            return
        self.ui.modelStatusLabel.setText(self._status.text)
        self.ui.modelStatusLabel.toolTip = self._status.instructions or self._status.text
        self.ui.downloadModelButton.visible = self._status.needs_download
        self.ui.downloadModelButton.enabled = self.busy is None or not self.busy.running
        self.ui.budgetLabel.setText(self._budgetText(parameters))

    def _budgetText(self, parameters: ModelParameters) -> str:
        volume = self._volumeNode()
        if volume is None or volume.GetImageData() is None:
            return "Select a volume to see the estimated time and memory."
        shape = tuple(reversed(volume.GetImageData().GetDimensions()))
        spacing = tuple(reversed(volume.GetSpacing()))
        estimate = self._state.budget(  # maxTokens 0: the machine's budget, named in the summary
            shape, spacing, parameters.maxTokens, parameters.model, parameters.device
        )
        return f"{volume.GetName()}: {estimate.summary()}"

    def ensureModelReady(self, fallback: str = "") -> bool:
        """True when the chosen model can be used now; downloads it first if the user agrees.

        ``fallback``: the model the work loads when the panel names none (e.g. an existing case library's own
        model), checked instead of the default-model policy; "" = the default policy.
        """
        state = self.state()
        node = self._parameterNode()
        if state is None or node is None:
            return state is not None
        status = state.status(node.model.model, fallback)
        if status.ready:
            return True
        if not status.needs_download:
            # only with instructions: messageBox sets every keyword on the ctkMessageBox, and a detailedText
            # of None would show the word "None" as details
            details = {"detailedText": status.instructions} if status.instructions else {}
            slicer.util.errorDisplay(status.text, **details)
            return False
        if not slicer.util.confirmOkCancelDisplay(state.consent_text(status), "VoxelFM: download the model"):
            return False
        if self.busy is None:
            state.download(status)
        else:
            with self.busy.operation(f"Downloading {status.model_id}...", "Model download"):
                runInWorker(self.busy, state.download, status)
                self.busy.stop(f"{status.model_id} downloaded and verified.")
        self.updateGUI(node.model)
        return state.status(node.model.model, fallback).ready

    def onRegistryChosen(self, index: int) -> None:
        reference = self.ui.modelComboBox.itemData(index)
        node = self._parameterNode()
        if reference is not None and node is not None:  # None: the "custom" entry
            node.model.model = reference

    def onBrowse(self) -> None:
        node = self._parameterNode()
        if node is None:
            return
        path = qt.QFileDialog.getOpenFileName(
            slicer.util.mainWindow(), "Choose a VoxelFM checkpoint", "", CHECKPOINT_FILTER
        )
        if path:
            node.model.model = path
