"""User-painted segmentations -> few-shot label images, and predictions -> new segments.

Label convention (docs/ARCHITECTURE.md): 0 = background, 1..K = structures, 255 = unlabelled. Everything is
computed on the VOLUME's voxel grid: each segment is exported through
``vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode`` with the volume as reference, so a
segmentation painted on another geometry (other spacing, flipped axes, a cropped labelmap) is resampled by
Slicer itself, exactly as the Segment Editor would show it.

Predicted segments carry the tag ``VoxelFM.Prediction``; they are never read back as paint, and writing a
new prediction replaces only them, so the user's painted segments are never modified. Re-running into an
output the user corrected: a predicted segment whose voxels the user changed since VoxelFM wrote them (a
fingerprint is stored with it) is the user's now: it is kept exactly as it is (name, colour, voxels), never
replaced again, and the new prediction is written beside it.
"""

from __future__ import annotations

import hashlib

import numpy as np
import slicer
import vtk

from voxelfm.errors import InputError
from voxelfm.segment.classes import SegmentClass
from voxelfm.segment.labels import (
    BACKGROUND_NAMES,
    MAX_CLASSES,
    FewShotLabels,
    few_shot_labels,
    is_background_name,
)

from .scene_guard import temporary_nodes
from .segment_tags import (
    CLASS_VALUE_TAG,
    EDITED,
    PREDICTION_STAMP_TAG,
    PREDICTION_TAG,
    _segment_ids,
    is_edited_prediction,
    is_prediction_segment,
    painted_segment_ids,
    tag,
)
from .undo import SaveUndoState
from .volume_nodes import matrix_to_numpy, node_ijk_to_ras, numpy_to_matrix


def segment_class(
    segmentation_node: slicer.vtkMRMLSegmentationNode, segment_id: str, value: int = 1
) -> SegmentClass:
    """The class a painted segment stands for, as label value ``value``."""
    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    terminology = segment.GetTerminology() if segment.HasTerminology() else ""
    return SegmentClass(
        value=value,
        name=segment.GetName(),
        color=tuple(float(c) for c in segment.GetColor()),
        terminology=terminology,
    )


def create_examples_segmentation(
    volume_node: slicer.vtkMRMLScalarVolumeNode,
) -> slicer.vtkMRMLSegmentationNode:
    """A new segmentation to paint examples in (uniquely named, on the volume's grid and under its transform),
    as the Segment module's "Open Segment Editor" makes it."""
    scene = volume_node.GetScene()
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", scene.GenerateUniqueName("VoxelFM examples"))
    node.CreateDefaultDisplayNodes()
    node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    node.SetAndObserveTransformNodeID(volume_node.GetTransformNodeID())
    return node


def segment_mask_on_volume(
    segmentation_node: slicer.vtkMRMLSegmentationNode,
    segment_id: str,
    volume_node: slicer.vtkMRMLVolumeNode,
) -> np.ndarray:
    """Boolean [k, j, i] mask of one segment resampled onto the volume's grid (Slicer does the resampling)."""
    if segmentation_node.GetSegmentation().GetSegment(segment_id) is None:
        raise InputError(
            f"Segmentation '{segmentation_node.GetName()}' has no segment '{segment_id}'; select one of its "
            "segments (the segment list may still show another segmentation's)."
        )
    scene = segmentation_node.GetScene()
    with temporary_nodes(scene):  # the labelmap, its display node, any colour table Slicer adds for it
        labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "VoxelFM temporary export")
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(segment_id)
        ok = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
            segmentation_node, ids, labelmap, volume_node
        )
        if not ok or labelmap.GetImageData() is None:
            raise InputError(
                f"Could not resample segment '{segment_id}' of '{segmentation_node.GetName()}' onto volume "
                f"'{volume_node.GetName()}'; check that both are loaded and overlap."
            )
        mask = np.array(slicer.util.arrayFromVolume(labelmap)) != 0
    expected = tuple(reversed(volume_node.GetImageData().GetDimensions()))
    if mask.shape != expected:  # ExportSegmentsToLabelmapNode honours the reference grid; guard anyway
        raise InputError(f"Segment export gave shape {mask.shape}, expected the volume's {expected}.")
    return mask


def labels_from_segmentation(
    segmentation_node: slicer.vtkMRMLSegmentationNode,
    volume_node: slicer.vtkMRMLScalarVolumeNode,
    mode: str = "slices",
    background_names: tuple[str, ...] = BACKGROUND_NAMES,
    axis: int = 0,
) -> FewShotLabels:
    """Turn painted segments into a few-shot label image on the volume grid (the core's ``few_shot_labels``).

    Structure segments become values 1..K in display order; segments named like "background" are explicit
    background. mode "slices": painted slices are fully labelled; "scribbles": only painted voxels.
    """
    if segmentation_node is None or volume_node is None:
        raise InputError("Select both a volume and the segmentation painted on it.")
    ids = painted_segment_ids(segmentation_node)
    if not ids:
        raise InputError(
            f"Segmentation '{segmentation_node.GetName()}' has no painted segments; add a segment per "
            "structure in the Segment Editor and paint a few slices of each."
        )
    names = {sid: segmentation_node.GetSegmentation().GetSegment(sid).GetName() for sid in ids}
    background_ids = [sid for sid in ids if is_background_name(names[sid], background_names)]
    structure_ids = [sid for sid in ids if sid not in background_ids]
    if not structure_ids:
        raise InputError("Only background was painted; add and paint at least one structure segment.")
    if len(structure_ids) > MAX_CLASSES:
        raise InputError(f"{len(structure_ids)} structure segments; at most {MAX_CLASSES} are supported.")
    if mode == "scribbles" and not background_ids:
        raise InputError(
            "The 'scribbles' workflow needs explicit background: add a segment named 'background' and paint "
            "some voxels outside the structures, or use the 'slices' workflow."
        )
    masks = {sid: segment_mask_on_volume(segmentation_node, sid, volume_node) for sid in ids}
    empty = [names[sid] for sid in ids if not masks[sid].any()]
    if empty:
        raise InputError(
            "These segments have no painted voxels inside the volume: "
            + ", ".join(f"'{n}'" for n in empty)
            + ". Paint them on this volume or delete them."
        )
    classes = [segment_class(segmentation_node, sid, v) for v, sid in enumerate(structure_ids, start=1)]
    return few_shot_labels(
        [masks[sid] for sid in structure_ids], [masks[sid] for sid in background_ids], mode, axis, classes
    )


def _oriented_image(mask: np.ndarray, ijk_to_ras: np.ndarray) -> slicer.vtkOrientedImageData:
    """uint8 vtkOrientedImageData with the given geometry (no temporary MRML node needed)."""
    from vtk.util import numpy_support

    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    image = slicer.vtkOrientedImageData()
    image.SetDimensions(mask.shape[2], mask.shape[1], mask.shape[0])
    image.SetImageToWorldMatrix(numpy_to_matrix(ijk_to_ras))
    scalars = numpy_support.numpy_to_vtk(mask.ravel(), deep=True, array_type=vtk.VTK_UNSIGNED_CHAR)
    image.GetPointData().SetScalars(scalars)
    return image


def _to_world(node) -> np.ndarray:
    transform = node.GetParentTransformNode()
    if transform is None:
        return np.eye(4)
    if not transform.IsTransformToWorldLinear():
        raise InputError(
            f"'{node.GetName()}' is under a non-linear transform; harden it before writing predictions."
        )
    matrix = vtk.vtkMatrix4x4()
    transform.GetMatrixTransformToWorld(matrix)
    return matrix_to_numpy(matrix)


def _local_to_local(source_node, target_node) -> np.ndarray:
    """4x4 from the source node's local RAS to the target node's local RAS (parent transforms)."""
    return np.linalg.inv(_to_world(target_node)) @ _to_world(source_node)


def _id_stem(name: str) -> str:
    stem = "".join(ch if ch.isalnum() else "_" for ch in name).strip("_")
    return f"VoxelFM_{stem or 'class'}"


def mask_fingerprint(mask: np.ndarray, ijk_to_ras: np.ndarray) -> str:
    """sha256 of a mask's voxels cropped to their bounding box and of where that box lies (``ijk_to_ras`` maps
    array index (0, 0, 0)); the same for the same voxels on any padding of the grid."""
    digest = hashlib.sha256()
    k = np.flatnonzero(mask.any(axis=(1, 2)))
    if len(k):
        plane = mask[k[0] : k[-1] + 1].any(axis=0)
        j, i = np.flatnonzero(plane.any(axis=1)), np.flatnonzero(plane.any(axis=0))
        lo = np.array([k[0], j[0], i[0]])
        hi = np.array([k[-1], j[-1], i[-1]]) + 1
        corner = np.asarray(ijk_to_ras, np.float64) @ np.array([lo[2], lo[1], lo[0], 1.0])
        digest.update(np.round(corner, 3).tobytes() + np.round(np.asarray(ijk_to_ras)[:3, :3], 6).tobytes())
        digest.update((hi - lo).astype(np.int64).tobytes())
        digest.update(np.packbits(mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]).tobytes())
    return digest.hexdigest()


# (node id, segment id) -> (id of the labelmap object, its MTime, fingerprint): skips re-hashing an untouched
# segment. VTK's modification times only grow, so an equal MTime at the same address is the same, unmodified
# object (a new object there would have a later MTime); no reference is kept, nothing is held in memory.
_WRITTEN: dict[tuple[str, str], tuple[int, int, str]] = {}


def prediction_fingerprint(segmentation_node: slicer.vtkMRMLSegmentationNode, segment_id: str) -> str:
    """``mask_fingerprint`` of a segment as stored in the node (its own labelmap, read in place, no copy).

    WHY: tells a user's edit of a predicted segment from our own write, independent of how Slicer pads or
    shares the labelmap (extent, layers); a rename or colour change is not an edit. A labelmap object whose
    MTime has not moved since we fingerprinted it is unchanged (any edit of it bumps its MTime).
    """
    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    image = segment.GetRepresentation(slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName())
    if image is None or image.GetPointData().GetScalars() is None:
        return mask_fingerprint(np.zeros((1, 1, 1), bool), np.eye(4))
    key = (segmentation_node.GetID(), segment_id)
    known = _WRITTEN.get(key)
    if known is not None and known[0] == id(image) and known[1] == image.GetMTime():
        return known[2]
    from vtk.util import numpy_support

    extent = image.GetExtent()
    dims = image.GetDimensions()
    values = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[::-1])
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    offset = np.eye(4)
    offset[:3, 3] = extent[0], extent[2], extent[4]
    fingerprint = mask_fingerprint(values == segment.GetLabelValue(), matrix_to_numpy(matrix) @ offset)
    _WRITTEN[key] = (id(image), image.GetMTime(), fingerprint)
    return fingerprint


def remove_prediction_segments(segmentation_node: slicer.vtkMRMLSegmentationNode) -> tuple[int, list[str]]:
    """Delete the segments VoxelFM wrote that nobody edited; (how many removed, ids of edited ones kept).

    A predicted segment whose voxels changed since it was written (or written before fingerprints were
    stored) is re-tagged as an edited prediction: kept as it is, never read as paint, never removed.
    """
    seg = segmentation_node.GetSegmentation()
    removed, kept = 0, []
    for sid in _segment_ids(segmentation_node):
        segment = seg.GetSegment(sid)
        if not is_prediction_segment(segment):
            continue
        if not is_edited_prediction(segment) and tag(segment, PREDICTION_STAMP_TAG) == prediction_fingerprint(
            segmentation_node, sid
        ):
            seg.RemoveSegment(sid)
            _WRITTEN.pop((segmentation_node.GetID(), sid), None)
            removed += 1
            continue
        if not is_edited_prediction(segment):
            segment.SetTag(PREDICTION_TAG, EDITED)
        kept.append(sid)
    return removed, kept


def edited_prediction_ids(segmentation_node: slicer.vtkMRMLSegmentationNode) -> list[str]:
    """Predicted segments the user edited (kept as theirs)."""
    seg = segmentation_node.GetSegmentation()
    return [sid for sid in _segment_ids(segmentation_node) if is_edited_prediction(seg.GetSegment(sid))]


def write_prediction(
    labels: np.ndarray,
    volume_node: slicer.vtkMRMLScalarVolumeNode,
    classes: list[SegmentClass],
    output_node: slicer.vtkMRMLSegmentationNode | None = None,
    output_name: str | None = None,
    name_suffix: str = "",
    save_undo_state: SaveUndoState | None = None,
) -> tuple[slicer.vtkMRMLSegmentationNode, list[str]]:
    """Write a predicted label image as NEW segments; returns (node, segment ids in class order).

    ``labels`` lies on the volume's grid; voxels with value ``cls.value`` belong to class ``cls``. With no
    ``output_node`` a new segmentation node (uniquely named) is created; otherwise earlier VoxelFM predictions
    in it that nobody edited are replaced and every other segment is left untouched, after ``save_undo_state(output_node)`` (see
    ``undo``: the Segment Editor's Undo then removes only the prediction, never the user's last stroke).
    Every class gets a segment (empty if never predicted) with the class name (+ ``name_suffix``), colour and
    terminology.
    """
    labels = np.asarray(labels)
    dims = volume_node.GetImageData().GetDimensions() if volume_node.GetImageData() else None
    if dims is None or labels.shape != tuple(reversed(dims)):
        raise InputError(
            f"Prediction shape {labels.shape} does not match volume '{volume_node.GetName()}' "
            f"({tuple(reversed(dims)) if dims else 'no image data'})."
        )
    if len(classes) > MAX_CLASSES:
        raise InputError(f"{len(classes)} classes; at most {MAX_CLASSES} are supported.")
    scene = volume_node.GetScene()
    if output_node is None:
        name = scene.GenerateUniqueName(output_name or f"{volume_node.GetName()} VoxelFM segmentation")
        output_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
        output_node.CreateDefaultDisplayNodes()
        output_node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
        output_node.SetAndObserveTransformNodeID(volume_node.GetTransformNodeID())
    elif save_undo_state is not None:
        save_undo_state(output_node)
    remove_prediction_segments(output_node)
    # labels lie on the volume's grid in the volume's local space; express it in the output node's space
    ijk_to_ras = _local_to_local(volume_node, output_node) @ node_ijk_to_ras(volume_node)
    seg = output_node.GetSegmentation()
    labelmap_name = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
    new_ids = []
    for cls in classes:
        # A fresh vtkSegment with its own labelmap layer: editing a shared layer (SetBinaryLabelmapToSegment)
        # can resample the user's segments in it when the grids differ, which must never happen.
        segment = slicer.vtkSegment()
        segment.SetName(cls.name + name_suffix)
        segment.SetColor(*cls.color)
        segment.SetTag(PREDICTION_TAG, "1")
        segment.SetTag(CLASS_VALUE_TAG, str(cls.value))
        if cls.terminology:
            segment.SetTerminology(cls.terminology)
        segment.AddRepresentation(labelmap_name, _oriented_image(labels == cls.value, ijk_to_ras))
        segment_id = seg.GenerateUniqueSegmentID(_id_stem(cls.name))
        if not seg.AddSegment(segment, segment_id):
            raise InputError(f"Slicer refused to add the predicted segment '{cls.name}'.")
        segment.SetTag(PREDICTION_STAMP_TAG, prediction_fingerprint(output_node, segment_id))
        new_ids.append(segment_id)
    return output_node, new_ids
