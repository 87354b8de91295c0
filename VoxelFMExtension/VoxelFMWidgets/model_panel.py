"""The one "model" panel every VoxelFM module embeds, and the one parameter pack behind it.

Resources/UI/ModelPanel.ui is loaded into a placeholder widget of the module .ui (``modelPanelPlaceholder``).
Its id/path line edit, device and precision combo boxes and token-budget spin box carry the dynamic property
``SlicerParameterName`` = ``model.<member>``: parameterNodeWrapper resolves such dotted names into the
parameterPack member (``_checkParamName`` / ``splitPossiblyDottedName`` in Slicer's
Base/Python/slicer/parameterNodeWrapper), so ``connectGui`` on the module's top widget binds them like any
other field. Only the registry combo box is driven here: choosing an entry writes its id into ``model.model``
(empty: the core's default-model policy).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import qt
import slicer
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterPack

if TYPE_CHECKING:
    from VoxelFMLib.model_service import ModelSpec

UI_FILE = "ModelPanel.ui"  # the .ui this file's self.ui names come from (checked by test_slicer_static)
DEVICES = ["auto", "cpu", "cuda", "mps"]
PRECISIONS = ["auto", "fp32", "bf16"]
CHECKPOINT_FILTER = "VoxelFM checkpoints (*.safetensors *.pth *.json *.yaml);;All files (*)"


@parameterPack
class ModelParameters:
    model: str = ""  # registry id or local checkpoint file / folder
    device: Annotated[str, Choice(DEVICES)] = "auto"
    precision: Annotated[str, Choice(PRECISIONS)] = "auto"
    maxTokens: Annotated[int, WithinRange(64, 65536)] = 8192  # tile budget in patch tokens


def modelSpec(parameters: ModelParameters) -> ModelSpec:
    """The Qt-free description of the chosen model that VoxelFMLib's logic classes take."""
    from VoxelFMLib.model_service import ModelSpec

    return ModelSpec(
        model=parameters.model.strip(),
        device=parameters.device,
        precision=parameters.precision,
        max_tokens=int(parameters.maxTokens),
    )


def modelPanelUiPath() -> Path:
    """ModelPanel.ui in the Resources folder beside this package (source tree and installed extension)."""
    return Path(__file__).resolve().parent.parent / "Resources" / "UI" / UI_FILE


class ModelPanel:
    """Loads ModelPanel.ui into ``placeholder``; the registry combo box writes the ``model`` pack of the node.

    An empty model reference means the core's default-model policy (the official model when cached or
    reachable, else the bundled offline one), so nothing is filled in for the user.
    """

    DEFAULT_ITEM, CUSTOM_ITEM = 0, 1

    def __init__(self, placeholder, parameterNode: Callable[[], Any]) -> None:
        self._parameterNode = parameterNode  # the module's current parameter node (or None)
        self._registryFilled = False
        self.widget = slicer.util.loadUI(str(modelPanelUiPath()))
        layout = placeholder.layout()
        if layout is None:
            layout = qt.QVBoxLayout(placeholder)
        layout.addWidget(self.widget)
        self.ui = slicer.util.childWidgetVariables(self.widget)
        self.refreshRegistry()
        self.ui.modelComboBox.connect("activated(int)", self.onRegistryChosen)
        self.ui.browseModelButton.connect("clicked(bool)", self.onBrowse)

    def refreshRegistry(self) -> None:
        """(Re)fill the combo box from the registry; retried later if the model service cannot load yet."""
        try:
            from VoxelFMLib.model_service import default_model_reference, registry_models
        except ImportError as exc:  # the model service needs torch, installed on the first run
            logging.debug("VoxelFM model registry not listed yet: %s", exc)
            return
        combo = self.ui.modelComboBox
        combo.clear()
        default = default_model_reference()
        combo.addItem(f"Default model ({default})" if default else "Default model", "")
        combo.addItem("Custom (id or file below)")  # no data: shown for a path or an unregistered id
        for choice in registry_models():
            combo.addItem(choice.label, choice.reference)
        self.ui.modelLineEdit.placeholderText = f"empty: {default or 'the default model'}"
        self._registryFilled = True

    def updateGUI(self, parameters: ModelParameters | None) -> None:
        """Show the registry entry matching the current reference (no "activated": not a user choice)."""
        if not self._registryFilled:
            self.refreshRegistry()
        if parameters is None or not self._registryFilled:
            return
        index = self.ui.modelComboBox.findData(parameters.model.strip())
        self.ui.modelComboBox.setCurrentIndex(index if index >= 0 else self.CUSTOM_ITEM)

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
