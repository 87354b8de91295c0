"""Which segments are the user's paint and which are VoxelFM predictions, and a cheap stamp of the paint.

Torch-free on purpose: the Segment module's auto-refit uses it before torch is installed.
Predicted segments carry the tag ``VoxelFM.Prediction``; they are never read back as paint.
"""

from __future__ import annotations

import slicer
import vtk

PREDICTION_TAG = "VoxelFM.Prediction"
CLASS_VALUE_TAG = "VoxelFM.ClassValue"
PREDICTION_STAMP_TAG = "VoxelFM.PredictionStamp"  # fingerprint of the voxels as VoxelFM wrote them
EDITED = "edited"  # PREDICTION_TAG value of a prediction the user edited: theirs now, never replaced


def _segment_ids(segmentation_node: slicer.vtkMRMLSegmentationNode) -> list[str]:
    seg = segmentation_node.GetSegmentation()
    return [seg.GetNthSegmentID(i) for i in range(seg.GetNumberOfSegments())]


def is_prediction_segment(segment: slicer.vtkSegment) -> bool:
    return segment.HasTag(PREDICTION_TAG)


def tag(segment: slicer.vtkSegment, key: str) -> str | None:
    """A segment's tag value (None when it has no such tag)."""
    value = vtk.reference("")
    return str(value) if segment.GetTag(key, value) else None


def is_edited_prediction(segment: slicer.vtkSegment) -> bool:
    return tag(segment, PREDICTION_TAG) == EDITED


def painted_segment_ids(segmentation_node: slicer.vtkMRMLSegmentationNode) -> list[str]:
    """Segments the user painted (predictions written by VoxelFM excluded), in display order."""
    seg = segmentation_node.GetSegmentation()
    return [sid for sid in _segment_ids(segmentation_node) if not is_prediction_segment(seg.GetSegment(sid))]


def content_stamp(segmentation_node: slicer.vtkMRMLSegmentationNode | None) -> tuple:
    """Cheap identity of the painted voxels: (segment id, label value, source-representation MTime) per segment.

    WHY: ``SegmentModified`` is raised by the Segment Editor's Undo/Redo (which restore voxels) but also by a
    rename, a colour change or a 3D surface update (which do not). Comparing this stamp before/after an event
    tells them apart without exporting any voxels. Predictions written by VoxelFM are left out.
    """
    if segmentation_node is None:
        return ()
    seg = segmentation_node.GetSegmentation()
    source = seg.GetSourceRepresentationName()
    stamp = []
    for sid in painted_segment_ids(segmentation_node):
        segment = seg.GetSegment(sid)
        representation = segment.GetRepresentation(source)
        mtime = representation.GetMTime() if representation is not None else 0
        stamp.append((sid, segment.GetLabelValue(), mtime))
    return tuple(stamp)
