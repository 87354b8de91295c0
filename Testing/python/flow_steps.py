"""Snapshots of what the user made or edited (point lists, volumes) and the node sets a Localize or Features step
adds; the scene census itself is ``flow_checks.Census``."""

from __future__ import annotations

from typing import Any

import numpy as np

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
