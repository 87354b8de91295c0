"""What a user-flow test checks after every step: the scene census (exactly what the step promises) and that
the nodes the user made or edited are as the user left them.

    watch = SceneWatch(scene)
    ...one user action...
    watch.expect(added={"vtkMRMLMarkupsFiducialNode": 1, "vtkMRMLMarkupsFiducialDisplayNode": 1})
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np


def census(scene) -> Counter:
    """How many nodes of each class the scene holds."""
    return Counter(scene.GetNthNode(n).GetClassName() for n in range(scene.GetNumberOfNodes()))


class SceneWatch:
    """The scene census between two steps: ``expect`` asserts the exact change, then starts the next step."""

    def __init__(self, scene) -> None:
        self.scene = scene
        self.mark()

    def mark(self) -> None:
        self.before = census(self.scene)

    def expect(self, added: dict[str, int] | None = None, removed: dict[str, int] | None = None) -> None:
        now = census(self.scene)
        got_added = dict(now - self.before)
        got_removed = dict(self.before - now)
        assert got_added == (added or {}), f"nodes added: {got_added}, expected {added or {}}"
        assert got_removed == (removed or {}), f"nodes removed: {got_removed}, expected {removed or {}}"
        self.mark()


RESULT_LIST = {"vtkMRMLMarkupsFiducialNode": 1, "vtkMRMLMarkupsFiducialDisplayNode": 1}
ROI = {"vtkMRMLMarkupsROINode": 1, "vtkMRMLMarkupsROIDisplayNode": 1}
COLOUR_VOLUME = {"vtkMRMLVectorVolumeNode": 1, "vtkMRMLVectorVolumeDisplayNode": 1}


def points_snapshot(node) -> list[tuple[Any, ...]]:
    """Everything the user can edit on a point list's control points (local coordinates), and its transform."""
    rows: list[tuple[Any, ...]] = [
        (
            node.GetNthControlPointLabel(n),
            tuple(node.GetNthControlPointPosition(n)),
            node.GetNthControlPointDescription(n),
            node.GetNthControlPointPositionStatus(n),
            node.GetNthControlPointLocked(n),
        )
        for n in range(node.GetNumberOfControlPoints())
    ]
    rows.append(("transform", node.GetTransformNodeID(), node.GetName()))
    return rows


def volume_snapshot(node) -> tuple[Any, ...]:
    """A volume node's voxels, geometry and parent transform (to check a step left it alone)."""
    import slicer

    array = slicer.util.arrayFromVolume(node)
    return (node.GetName(), node.GetTransformNodeID(), tuple(node.GetOrigin()), array.tobytes())


def world_points(node) -> dict[str, np.ndarray]:
    """Label -> world RAS position of each control point."""
    out = {}
    for n in range(node.GetNumberOfControlPoints()):
        pos = [0.0, 0.0, 0.0]
        node.GetNthControlPointPositionWorld(n, pos)
        out[node.GetNthControlPointLabel(n)] = np.array(pos)
    return out


def direct(fn, *args, **kwargs):
    """Runs the slow step on the calling thread, as the module's worker would (progress/cancel defaults)."""
    return fn(*args, **kwargs)
