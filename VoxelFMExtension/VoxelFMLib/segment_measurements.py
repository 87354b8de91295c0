"""Measurements of the segments of a segmentation node, as Slicer's Segment Statistics computes them.

Each segment is read from its own binary labelmap representation (``GetSegmentBinaryLabelmapRepresentation``:
its own grid, no resampling, no temporary nodes; in a shared layer the segment is the voxels holding its label
value) and measured by the core (``voxelfm.report.measurements``): volume, largest diameter, centroid. Slicer
applies the node's parent transform to that labelmap (its applyParentTransform default), so the centroid is in
world RAS, where the slice views jump to.
"""

from __future__ import annotations

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from voxelfm.errors import InputError
from voxelfm.report.measurements import SegmentMeasurement, measure_mask

from .volume_nodes import matrix_to_numpy


def segment_mask(segmentation_node, segment_id: str) -> tuple[np.ndarray, np.ndarray]:
    """(boolean mask [k, j, i], ijk_to_ras in world RAS) of one segment on its own labelmap grid."""
    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    if segment is None:
        raise InputError(f"Segmentation '{segmentation_node.GetName()}' has no segment '{segment_id}'.")
    image = slicer.vtkOrientedImageData()
    ok = slicer.vtkSlicerSegmentationsModuleLogic.GetSegmentBinaryLabelmapRepresentation(
        segmentation_node, segment_id, image, True
    )
    extent = image.GetExtent()
    if not ok or image.GetPointData().GetScalars() is None or extent[1] < extent[0]:
        return np.zeros((1, 1, 1), bool), np.eye(4)
    dims = image.GetDimensions()
    values = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[2], dims[1], dims[0])
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    offset = np.eye(4)
    offset[:3, 3] = extent[0], extent[2], extent[4]  # array index 0 is the extent's first voxel
    ijk_to_ras = matrix_to_numpy(matrix) @ offset
    return values == segment.GetLabelValue(), ijk_to_ras


def measure_segmentation(segmentation_node, segment_ids: list[str] | None = None) -> list[SegmentMeasurement]:
    """One measurement per segment (display order), tagged with the node id so the GUI can jump to it."""
    seg = segmentation_node.GetSegmentation()
    ids = segment_ids or [seg.GetNthSegmentID(i) for i in range(seg.GetNumberOfSegments())]
    out = []
    for sid in ids:
        mask, ijk_to_ras = segment_mask(segmentation_node, sid)
        m = measure_mask(mask, ijk_to_ras, seg.GetSegment(sid).GetName(), sid)
        out.append(m.with_source(segmentation_node.GetID()))
    return out
