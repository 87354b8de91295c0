"""Leaving and re-entering a module must not pile up parameter-node observers (VoxelFMLib.parameter_binding).

The fake wrapper behaves like Slicer 5.10's parameterNodeWrapper: ``connectGui`` adds a ModifiedEvent observer
to the node that ``disconnectGui`` leaves in place. The widget's sequence (enter -> exit -> enter ..., then a new
scene's node) is replayed with the module widget's own rules.
"""

from __future__ import annotations

from VoxelFMLib.parameter_binding import GuiBinding, WrapperCache


class FakeNode:
    def __init__(self) -> None:
        self.observers: list[object] = []


class Wrapper510:
    """connectGui adds an observer; disconnectGui removes only the GUI mapping (as in Slicer 5.10)."""

    def __init__(self, node: FakeNode) -> None:
        self.parameterNode = node
        self.guis: dict[int, object] = {}

    def connectGui(self, gui) -> int:
        tag = len(self.guis) + len(self.parameterNode.observers)
        self.guis[tag] = gui
        self.parameterNode.observers.append(self)
        return tag

    def disconnectGui(self, tag) -> None:
        self.guis.pop(tag, None)


def test_enter_exit_cycles_connect_the_gui_once_per_node():
    node = FakeNode()
    wrappers, binding = WrapperCache(Wrapper510), GuiBinding()
    for _ in range(10):  # enter(): the logic's wrapper, bound; exit() keeps the binding
        wrapper = wrappers.get(node)
        binding.bind(wrapper, "gui")
    assert wrappers.get(node) is wrapper
    assert len(node.observers) == 1 and len(wrapper.guis) == 1

    new_node = FakeNode()  # a new scene: the old node's GUI mapping goes, the new node is connected once
    for _ in range(3):
        binding.bind(wrappers.get(new_node), "gui")
    assert wrapper.guis == {} and len(new_node.observers) == 1
    binding.bind(None, "gui")  # scene closing
    assert binding.wrapper is None and wrappers.get(None) is None


def test_without_the_cache_each_visit_adds_an_observer():
    """What the cache prevents (so the test above can fail): a new wrapper per enter, reconnected each time."""
    node, binding = FakeNode(), GuiBinding()
    for _ in range(10):
        binding.bind(Wrapper510(node), "gui")
    assert len(node.observers) == 10
