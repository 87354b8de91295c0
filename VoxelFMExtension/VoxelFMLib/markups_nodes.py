"""Markups nodes <-> the core's point lists and boxes (Qt-free, real MRML).

Reading never changes a node. Predictions always go into a node this module created (tagged with the
``PREDICTION_ATTRIBUTE``), never into one the user placed, and never into one of ours the user has edited
since (moved, added, removed, renamed or described a point, or put it under a transform: ``edited_by_user``);
positions are world RAS (parent transforms applied when reading; new nodes are created without a transform).
"""

from __future__ import annotations

import hashlib

import numpy as np
import slicer
import vtk

from voxelfm.errors import InputError
from voxelfm.localize.boxes import Box
from voxelfm.localize.points import PointList

from .volume_nodes import numpy_to_matrix

PREDICTION_ATTRIBUTE = "VoxelFM.LandmarkPrediction"
WRITTEN_ATTRIBUTE = "VoxelFM.LandmarkPrediction.Written"  # fingerprint of the points as VoxelFM wrote them
DEFINED = slicer.vtkMRMLMarkupsNode.PositionDefined


def points_from_node(node) -> PointList:
    """The placed control points of a point list node: labels -> names, world RAS positions, descriptions."""
    if node is None:
        raise InputError("Select a point list (markups) with the reference landmarks.")
    if not node.IsA("vtkMRMLMarkupsFiducialNode"):
        raise InputError(
            f"'{node.GetName()}' is a {node.GetClassName()}, not a point list; landmarks must be placed as a "
            "point list (Markups > Point list)."
        )
    names, rows, descriptions = [], [], []
    for n in range(node.GetNumberOfControlPoints()):
        if node.GetNthControlPointPositionStatus(n) != DEFINED:
            continue
        pos = [0.0, 0.0, 0.0]
        node.GetNthControlPointPositionWorld(n, pos)
        names.append(node.GetNthControlPointLabel(n).strip() or f"{node.GetName()}-{n + 1}")
        rows.append(pos)
        descriptions.append(node.GetNthControlPointDescription(n) or "")
    return PointList(names, np.asarray(rows, dtype=np.float64).reshape(-1, 3), descriptions, node.GetName())


def is_prediction_node(node) -> bool:
    return node is not None and node.GetAttribute(PREDICTION_ATTRIBUTE) == "1"


def points_fingerprint(node) -> str:
    """Everything a user can change on a point list's control points (labels, positions, descriptions, placed
    or not, count) and its parent transform, as one digest.

    WHY: moving a control point does not change the node's MTime, so an edit is seen by content only.
    """
    digest = hashlib.sha1(f"{node.GetNumberOfControlPoints()}|{node.GetTransformNodeID()}".encode())
    for n in range(node.GetNumberOfControlPoints()):
        position = node.GetNthControlPointPosition(n)
        row = (
            node.GetNthControlPointLabel(n),
            node.GetNthControlPointDescription(n),
            node.GetNthControlPointPositionStatus(n),
            tuple(float(v) for v in position),
        )
        digest.update(repr(row).encode())
    return digest.hexdigest()


def edited_by_user(node) -> bool:
    """True when one of our prediction lists no longer holds exactly what VoxelFM last wrote into it."""
    return node.GetAttribute(WRITTEN_ATTRIBUTE) != points_fingerprint(node)


def write_points_node(scene, points: PointList, name: str, node=None):
    """Write ``points`` (labels, descriptions) into ``node`` if it is one of our prediction nodes, still in
    ``scene`` and as we left it, else into a new point list; returns the node written."""
    if node is not None and (
        not is_prediction_node(node) or not scene.IsNodePresent(node) or edited_by_user(node)
    ):
        node = None  # a user's node, one removed, or one the user edited: never written, a new one is made
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", scene.GetUniqueNameByString(name))
        node.SetAttribute(PREDICTION_ATTRIBUTE, "1")
        node.CreateDefaultDisplayNodes()
    wasModified = node.StartModify()
    try:
        node.RemoveAllControlPoints()
        for n, label in enumerate(points.names):
            index = node.AddControlPoint(vtk.vtkVector3d(*points.ras[n]), label)
            node.SetNthControlPointDescription(index, points.descriptions[n])
            node.SetNthControlPointLocked(index, True)
            if points.missing[n]:  # looked for and not found: Slicer's "missing" status, like the .mrk.json
                node.SetNthControlPointPositionMissing(index)
    finally:
        node.EndModify(wasModified)
    node.SetAttribute(WRITTEN_ATTRIBUTE, points_fingerprint(node))
    return node


def distances_to_node(points: PointList, node) -> dict[str, float]:
    """Distance (mm) from each point to the first placed point of the same name in ``node`` (names in both)."""
    if node is None:
        return {}
    other = points_from_node(node)
    out = {}
    for n, name in enumerate(points.names):
        pos = other.position(name)
        if pos is not None:
            out[name] = float(np.linalg.norm(points.ras[n] - pos))
    return out


def write_roi_node(scene, box: Box, description: str = ""):
    """A new markups ROI node holding ``box`` (centre, size and axes)."""
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", scene.GetUniqueNameByString(box.name))
    node.SetAttribute(PREDICTION_ATTRIBUTE, "1")
    node.CreateDefaultDisplayNodes()
    m = np.eye(4)
    m[:3, :3] = box.axes
    m[:3, 3] = box.center
    node.SetAndObserveObjectToNodeMatrix(numpy_to_matrix(m))
    node.SetSize(*[float(v) for v in box.size])
    node.SetDescription(description)
    return node


def roi_from_node(node) -> Box:
    """A markups ROI node as a Box (world coordinates of its centre and axes)."""
    center = [0.0, 0.0, 0.0]
    node.GetCenterWorld(center)
    size = list(node.GetSize())
    axes = np.zeros((3, 3))
    for col, getter in enumerate((node.GetXAxisWorld, node.GetYAxisWorld, node.GetZAxisWorld)):
        v = [0.0, 0.0, 0.0]
        getter(v)
        axes[:, col] = v
    return Box(node.GetName(), np.array(center), np.array(size), axes)


def jump_slices_to(scene, ras: np.ndarray) -> int:
    """Centre every slice view of the scene on ``ras`` (the "jump to point" action); returns how many."""
    r, a, s = (float(v) for v in ras)
    count = 0
    for n in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceNode")):
        slicer_node = scene.GetNthNodeByClass(n, "vtkMRMLSliceNode")
        slicer_node.JumpSliceByCentering(r, a, s)
        count += 1
    return count
