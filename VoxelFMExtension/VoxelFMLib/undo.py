"""Keep the Segment Editor's Undo meaningful when VoxelFM writes into a segmentation the user is editing.

The Segment Editor's Undo restores ``vtkSegmentationHistory`` states, and its paint effect saves a state before
each stroke. A prediction written into the edited segmentation without saving a state first would make the
next Undo remove the prediction AND the user's last stroke. So every write into an existing segmentation
first calls a ``save_undo_state(segmentation_node)`` callable. It is passed in (Qt-free logic): in Slicer it
wraps the Segment Editor widget (``editor.segmentationNode()`` and ``editor.saveStateForUndo()``, which
delegates to ``vtkSlicerSegmentEditorLogic.SaveStateForUndo`` in Slicer >= 5.10); in tests a real
``vtkSlicerSegmentEditorLogic``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

SaveUndoState = Callable[[Any], bool]


def editor_undo_saver(edited_node: Callable[[], Any], save_state: Callable[[], Any]) -> SaveUndoState:
    """A ``save_undo_state`` for one editor: saves a state only when the written node is the one it edits.

    ``edited_node()``: the segmentation node the editor currently edits (or None); ``save_state()``: save one
    history state of it. Writing into any other node needs no state (the editor's Undo does not touch it).
    """

    def save(segmentation_node: Any) -> bool:
        current = edited_node()
        if current is None or segmentation_node is None or current.GetID() != segmentation_node.GetID():
            return False
        result = save_state()
        return result is None or bool(result)

    return save


def editor_logic_undo_saver(editor_logic: Any) -> SaveUndoState:
    """``save_undo_state`` for a ``vtkSlicerSegmentEditorLogic`` (what Slicer's Segment Editor widget wraps)."""
    return editor_undo_saver(editor_logic.GetSegmentationNode, editor_logic.SaveStateForUndo)
