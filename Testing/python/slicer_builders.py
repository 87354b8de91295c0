"""Shared builders for the VoxelFMLib tests on real MRML (slicer-core wheel); imported after the skip checks."""

from __future__ import annotations

import contextlib

import numpy as np
import slicer

from voxelfm.segment import SegmentationResult
from voxelfm.segment.config import SegmentationConfig
from voxelfm.segment.probe import SegmentationProbe
from VoxelFMLib import segmentation_nodes, volume_nodes

SHAPE = (8, 9, 10)  # k, j, i


def oblique_flipped_matrix(spacing=(0.8, 1.1, 2.5), origin=(-40.0, 12.5, 7.0)) -> np.ndarray:
    """Rotation about an oblique axis composed with a flip of j: a det<0 direction matrix."""
    axis = np.array([1.0, 2.0, 3.0]) / np.linalg.norm([1.0, 2.0, 3.0])
    angle = 0.4
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rot = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
    direction = rot @ np.diag([1.0, -1.0, 1.0])
    m = np.eye(4)
    m[:3, :3] = direction * np.asarray(spacing)
    m[:3, 3] = origin
    return m


def add_segmentation(scene, masks: dict[str, np.ndarray], ijk_to_ras: np.ndarray, colors=None, node=None):
    """Build a segmentation like a user would have it: one labelmap import per named segment."""
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "painted")
        node.CreateDefaultDisplayNodes()
    seg = node.GetSegmentation()
    for n, (name, mask) in enumerate(masks.items()):
        lab = volume_nodes.create_labelmap_node(scene, mask.astype(np.uint8), ijk_to_ras, name="tmp")
        before = {seg.GetNthSegmentID(i) for i in range(seg.GetNumberOfSegments())}
        if mask.any():
            assert logic.ImportLabelmapToSegmentationNode(lab, node)
            (new_id,) = {seg.GetNthSegmentID(i) for i in range(seg.GetNumberOfSegments())} - before
        else:
            new_id = seg.AddEmptySegment("", name)
        scene.RemoveNode(lab)
        segment = seg.GetSegment(new_id)
        segment.SetName(name)
        segment.SetColor(*(colors[n] if colors else (0.1 * (n + 1), 0.5, 0.9)))
    return node


def segment_masks(node, volume_node) -> dict[str, np.ndarray]:
    """Mask per segment NAME on the volume grid."""
    seg = node.GetSegmentation()
    out = {}
    for i in range(seg.GetNumberOfSegments()):
        sid = seg.GetNthSegmentID(i)
        out[seg.GetSegment(sid).GetName()] = segmentation_nodes.segment_mask_on_volume(node, sid, volume_node)
    return out


def masks_by_id(node, volume_node, ids) -> dict[str, np.ndarray]:
    return {sid: segmentation_nodes.segment_mask_on_volume(node, sid, volume_node) for sid in ids}


def painted_masks():
    liver = np.zeros(SHAPE, bool)
    liver[2, 1:5, 2:6] = True
    liver[5, 2:6, 3:7] = True
    spleen = np.zeros(SHAPE, bool)
    spleen[5, 6:8, 1:3] = True
    return liver, spleen


@contextlib.contextmanager
def added_nodes(scene):
    """``with added_nodes(scene) as added:`` -> ``added`` lists the ids of nodes the block left in the scene."""
    from VoxelFMLib.scene_guard import node_ids

    before = node_ids(scene)
    added: list[str] = []
    yield added
    added.extend(sorted(node_ids(scene) - before))


class CopyPaintPipeline:
    """Fake core pipeline: predicts each labelled voxel's painted class (0 elsewhere), with a real probe object.

    Enough to drive the Slicer logic (prepare -> predict -> write, apply_probe) without a backbone."""

    config = SegmentationConfig()

    def run_fit(self, request, progress=None, cancel=None, volume_key=None):
        labels = request.prepared_labels()
        classes = request.classes(labels)
        lab = np.asarray(labels.array)
        out = np.where(lab == 255, 0, lab).astype(np.uint8)
        return SegmentationResult(out, request.volume.ijk_to_ras, classes, probe=_probe(classes))

    def run_apply(self, request, progress=None, cancel=None, volume_key=None):
        volume, probe = request.volume, request.probe
        out = np.zeros(volume.array.shape, np.uint8)
        out[: out.shape[0] // 2] = probe.classes[0].value
        return SegmentationResult(out, volume.ijk_to_ras, list(probe.classes), probe=probe)


def _probe(classes):
    k = len(classes)
    return SegmentationProbe(
        list(classes), SegmentationConfig(), None, None, None, None, np.zeros(k + 1, np.float32)
    )
