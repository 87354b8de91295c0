"""Leave no stray nodes: every node a block adds to the scene is removed when the block ends.

Slicer helpers add nodes as a side effect (ExportSegmentsToLabelmapNode: the labelmap's display node and, in
recent versions, a ``<segmentation>_ColorTable``); removing only the node we made leaves the rest visible.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import slicer


def node_ids(scene: slicer.vtkMRMLScene) -> set[str]:
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


def nodes_by_class(scene: slicer.vtkMRMLScene, class_name: str) -> list:
    """The scene's nodes of ``class_name`` (subclasses included), in scene order.

    WHY: ``scene.GetNodesByClass`` returns a new vtkCollection the caller owns (Slicer's own
    ``slicer.util.getNodesByClass`` UnRegisters it); indexing the scene by class creates no collection.
    """
    return [scene.GetNthNodeByClass(i, class_name) for i in range(scene.GetNumberOfNodesByClass(class_name))]


@contextlib.contextmanager
def temporary_nodes(scene: slicer.vtkMRMLScene) -> Iterator[None]:
    """Remove, on exit (also on error), every node added to ``scene`` inside the block."""
    before = node_ids(scene)
    try:
        yield
    finally:
        for node_id in node_ids(scene) - before:
            node = scene.GetNodeByID(node_id)
            if node is not None:
                scene.RemoveNode(node)
