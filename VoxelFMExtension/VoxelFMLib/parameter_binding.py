"""One parameter-node wrapper per node and one GUI connection per wrapper (Qt-free, so it is tested here).

WHY: in Slicer 5.10, ``parameterNodeWrapper.connectGui`` adds a ModifiedEvent observer to the parameter node
(``_connectParametersToGui``) that ``disconnectGui`` never removes, and the Slicer module template builds a new
wrapper on every ``enter()``. Connecting on every enter and disconnecting on every exit therefore leaves one
more observer (holding one more wrapper) per visit, each updating the GUI on every parameter change. So a
module widget keeps one wrapper per parameter node (``WrapperCache``) and connects the GUI once per wrapper
(``GuiBinding``): leaving and re-entering the module reuses the connection; only another node (a new scene)
disconnects and connects again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class WrapperCache:
    """The typed wrapper of a raw parameter node, built once per node."""

    def __init__(self, make: Callable[[Any], Any]) -> None:
        self._make = make
        self._node: Any = None
        self._wrapper: Any = None

    def get(self, node: Any) -> Any:
        if node is None:
            return None
        if self._wrapper is None or self._node is not node:
            self._node, self._wrapper = node, self._make(node)
        return self._wrapper


class GuiBinding:
    """The GUI connected to at most one wrapper; ``bind`` connects only when the wrapper changed."""

    def __init__(self) -> None:
        self.wrapper: Any = None
        self._tag: Any = None

    def bind(self, wrapper: Any, gui: Any) -> bool:
        """Connect ``gui`` to ``wrapper`` (None: disconnect); True when a new connection was made."""
        if wrapper is self.wrapper:
            return False
        self.unbind()
        if wrapper is not None:
            self._tag = wrapper.connectGui(gui)
            self.wrapper = wrapper
            return True
        return False

    def unbind(self) -> None:
        if self.wrapper is not None and self._tag is not None:
            self.wrapper.disconnectGui(self._tag)
        self.wrapper, self._tag = None, None
