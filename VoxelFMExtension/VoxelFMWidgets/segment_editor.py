"""The Segment Editor module as the VoxelFM modules use it: open it on a node, keep its Undo meaningful."""

from __future__ import annotations

from typing import Any

import slicer

from VoxelFMLib.undo import SaveUndoState, editor_undo_saver


def segmentEditorWidget() -> Any:
    """The Segment Editor module's qMRMLSegmentEditorWidget if that module's GUI was created, else None.

    Not created means nothing was painted there in this session, so its Undo history is empty anyway.
    """
    moduleWidget = getattr(slicer.modules, "SegmentEditorWidget", None)  # set when its GUI is built
    return getattr(moduleWidget, "editor", None)


def segmentEditorUndoSaver() -> SaveUndoState:
    """``save_undo_state`` for VoxelFMLib's writes: a history state of the Segment Editor's node before each."""

    def editedNode():
        editor = segmentEditorWidget()
        return editor.segmentationNode() if editor is not None else None

    def save():
        editor = segmentEditorWidget()
        if editor is not None:
            editor.saveStateForUndo()  # Slicer >= 5.10: vtkSlicerSegmentEditorLogic::SaveStateForUndo

    return editor_undo_saver(editedNode, save)


def openSegmentEditor(segmentationNode, volumeNode) -> None:
    """Show the Segment Editor on this segmentation, painting on this volume."""
    slicer.util.selectModule("SegmentEditor")
    editor = segmentEditorWidget()
    if editor is not None:
        editor.setSegmentationNode(segmentationNode)
        editor.setSourceVolumeNode(volumeNode)
