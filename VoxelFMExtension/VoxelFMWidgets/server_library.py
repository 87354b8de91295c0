"""The Retrieve and Report panels' case-library choice when computing on a server: the server's libraries by id.

Thin: the list, the status line and the chosen library come from VoxelFMLib.server_libraries (Qt-free, tested
against a real server). On this computer the panel's folder row is shown instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from VoxelFMWidgets.messages import userMessage
from VoxelFMWidgets.model_panel import serverChoice


class ServerLibraryChoice:
    """Binds a panel's server-library row ``ids`` (its combo box of ids, Refresh button and label) to the parameter
    node's ``serverLibrary`` (an id); its folder row ``folder`` (``libraryPath``) is shown instead on this
    computer. ``optional``: the list starts with an empty entry (no library)."""

    def __init__(
        self,
        parameterNode: Callable[[], Any],
        ids: tuple[Any, ...],
        folder: tuple[Any, ...],
        optional: bool = False,
    ) -> None:
        self._node, self._serverRow, self._folderRow, self.optional = parameterNode, ids, folder, optional
        self.combo, refresh = ids[0], ids[1]
        self.status = ""  # one line: the chosen server library, or what is wrong
        refresh.connect("clicked(bool)", lambda checked: self.refresh())
        self.combo.connect("currentIndexChanged(int)", lambda index: self.onChosen())

    @staticmethod
    def server():
        """The panel's server, or None for this computer (also when the Compute setting is incomplete)."""
        try:
            return serverChoice()
        except Exception:  # e.g. "server" without a URL: the model panel says so; the folder row stays
            return None

    def update(self) -> bool:
        """Show the server row or the folder row; True when computing on a server."""
        onServer = self.server() is not None
        for widget in self._folderRow:
            widget.visible = not onServer
        for widget in self._serverRow:
            widget.visible = onServer
        return onServer

    def library(self) -> str:
        """What the logic takes as its library: the server library's id, or the folder ("" = none chosen)."""
        from VoxelFMLib.server_libraries import chosen_library

        node = self._node()
        if node is None:
            return ""
        try:
            return chosen_library(node.libraryPath, node.serverLibrary, self.server())
        except Exception:  # no server library chosen yet
            return ""

    def refresh(self) -> None:
        """Ask the server for its libraries; keep the chosen one when it is still offered."""
        from VoxelFMLib.server_libraries import library_choices

        server, node = self.server(), self._node()
        if server is None or node is None:
            return
        try:
            choices = library_choices(server)
        except Exception as exc:  # dependencies missing: say so, never raise into Qt
            self.status = userMessage(exc)
            return
        combo, wanted = self.combo, node.serverLibrary
        items = ([""] if self.optional else []) + choices.ids
        combo.blockSignals(True)
        combo.clear()
        for library_id in items:
            combo.addItem(library_id)
        combo.currentIndex = items.index(wanted) if wanted in items else (0 if items else -1)
        combo.blockSignals(False)
        self.onChosen(choices.text)

    def onChosen(self, listed: str = "") -> None:
        from VoxelFMLib.server_libraries import describe_server_library

        server, node = self.server(), self._node()
        if server is None or node is None:
            return
        chosen = self.combo.currentText or ""
        node.serverLibrary = chosen
        described = describe_server_library(server, chosen) if chosen else ""
        self.status = " ".join(filter(None, (listed, described)))
        self.combo.toolTip = self.status
