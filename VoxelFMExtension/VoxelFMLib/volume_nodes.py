"""Scalar / labelmap volume nodes <-> ``voxelfm.imaging.volume.Volume`` with exact geometry.

The node's IJKToRAS matrix (origin, spacing and any direction, oblique or flipped) becomes
``Volume.ijk_to_ras`` unchanged, and the voxel array keeps Slicer's [k, j, i] order, so a round trip is
lossless. Parent transforms are not applied unless ``world=True`` (then only linear ones are allowed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import slicer
import vtk

from voxelfm.errors import InputError
from voxelfm.imaging.volume import Volume


def matrix_to_numpy(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    """vtkMatrix4x4 -> float64 4x4 array."""
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=np.float64)


def numpy_to_matrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    """4x4 array -> new vtkMatrix4x4."""
    array = np.asarray(array, dtype=np.float64)
    if array.shape != (4, 4):
        raise ValueError(f"expected a 4x4 matrix, got shape {array.shape}")
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def node_ijk_to_ras(node: slicer.vtkMRMLVolumeNode, world: bool = False) -> np.ndarray:
    """IJKToRAS of a volume node (local coordinates, or world if ``world`` and the transform is linear)."""
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    ijk_to_ras = matrix_to_numpy(matrix)
    transform = node.GetParentTransformNode()
    if world and transform is not None:
        if not transform.IsTransformToWorldLinear():
            raise InputError(
                f"Volume '{node.GetName()}' is under a non-linear transform; harden the transform "
                "(Data module, right-click > Harden transform) before using it with VoxelFM."
            )
        to_world = vtk.vtkMatrix4x4()
        transform.GetMatrixTransformToWorld(to_world)
        ijk_to_ras = matrix_to_numpy(to_world) @ ijk_to_ras
    return ijk_to_ras


def volume_from_node(node: slicer.vtkMRMLScalarVolumeNode, world: bool = False) -> Volume:
    """Copy a scalar (or labelmap) volume node into a ``Volume`` (array copied, never a view)."""
    if node is None or node.GetImageData() is None:
        name = node.GetName() if node is not None else "None"
        raise InputError(f"Volume '{name}' has no image data; load or select a volume that contains voxels.")
    if node.GetImageData().GetNumberOfScalarComponents() != 1:
        raise InputError(
            f"Volume '{node.GetName()}' has {node.GetImageData().GetNumberOfScalarComponents()} components; "
            "VoxelFM needs a single-component (grayscale CT) volume."
        )
    array = np.array(slicer.util.arrayFromVolume(node), copy=True)
    return Volume(array=array, ijk_to_ras=node_ijk_to_ras(node, world=world), name=node.GetName() or "")


def ct_volume_from_node(
    node: slicer.vtkMRMLVolumeNode | None, role: str = "the CT", world: bool = False
) -> Volume:
    """Copy a node that may serve as a CT: one scalar component, not a labelmap (one rule for every module).

    WHY: ``GetNodesByClass("vtkMRMLScalarVolumeNode")`` also returns labelmaps and VoxelFM's own colour
    (vector) volumes; used as a CT they give wrong features without any error.
    """
    if node is None:
        raise InputError(f"No volume is selected as {role}; select a CT volume.")
    refusal = ct_refusal(node)
    if refusal:
        raise InputError(f"Volume '{node.GetName()}' cannot be {role}: {refusal}.")
    return volume_from_node(node, world=world)


def ct_refusal(node: slicer.vtkMRMLVolumeNode) -> str:
    """Why ``node`` cannot be used as a CT, or "" when it can."""
    if node.IsA("vtkMRMLLabelMapVolumeNode"):
        return "it is a labelmap (a segmentation), not a CT image; select the CT it was drawn on"
    if not node.IsA("vtkMRMLScalarVolumeNode") or node.IsA("vtkMRMLVectorVolumeNode"):
        return "it is a colour/vector volume, not a grayscale CT; select a single-component CT volume"
    image = node.GetImageData()
    if image is None:
        return "it has no image data; load a CT into it first"
    if image.GetNumberOfScalarComponents() != 1:
        return f"it has {image.GetNumberOfScalarComponents()} components; select a single-component CT volume"
    return ""


def volume_key(node: slicer.vtkMRMLVolumeNode, world: bool = False) -> str:
    """Cheap identity of a node's voxels and geometry: node id, image-data modification time, IJKToRAS (with
    ``world``: including the parent transforms, so moving the volume with a transform changes the key).

    WHY: hashing a 512x512x300 CT takes about a second; an interactive refit must not pay it each time. Any
    change of the voxels through Slicer bumps the image data's modification time.
    """
    image = node.GetImageData()
    stamp = image.GetMTime() if image is not None else 0
    matrix = np.round(node_ijk_to_ras(node, world=world), 6).tobytes().hex()
    return f"{node.GetID()}:{stamp}:{matrix}"


def check_input_volume(
    volume_node: slicer.vtkMRMLVolumeNode | None, node_id: str, work: str, again: str
) -> None:
    """The write step's check, shared by every logic: the node given is the one the inputs were copied from and
    is still in the scene (``work``: what ran meanwhile; ``again``: what the user does next).

    WHY: the GUI stays live while the worker runs; a result written for another or a removed volume belongs to
    no image the user sees."""
    if volume_node is None or volume_node.GetID() != node_id:
        raise InputError(f"The input volume changed while {work}; {again}.")
    if volume_node.GetScene() is None:
        raise InputError(
            f"Volume '{volume_node.GetName()}' was removed from the scene while {work}; nothing was written."
        )


def update_node_from_volume(node: slicer.vtkMRMLVolumeNode, volume: Volume) -> None:
    """Overwrite a node's voxels and geometry with ``volume`` (deep copy)."""
    node.SetIJKToRASMatrix(numpy_to_matrix(volume.ijk_to_ras))
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(volume.array))


def create_volume_node(
    scene: slicer.vtkMRMLScene,
    volume: Volume,
    name: str | None = None,
    class_name: str = "vtkMRMLScalarVolumeNode",
) -> slicer.vtkMRMLVolumeNode:
    """Add a new volume node holding ``volume`` (with default display nodes)."""
    node = scene.AddNewNodeByClass(class_name, name or volume.name or "VoxelFM volume")
    update_node_from_volume(node, volume)
    node.CreateDefaultDisplayNodes()
    return node


def create_labelmap_node(
    scene: slicer.vtkMRMLScene,
    labels: np.ndarray,
    ijk_to_ras: np.ndarray,
    name: str = "VoxelFM labels",
    color_node: slicer.vtkMRMLColorNode | None = None,
) -> slicer.vtkMRMLLabelMapVolumeNode:
    """Add a labelmap volume node from an integer array [k, j, i] on the grid ``ijk_to_ras``."""
    labels = np.asarray(labels)
    if labels.ndim != 3 or not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"A label image must be a 3D integer array, got {labels.ndim}D {labels.dtype}.")
    node = create_volume_node(
        scene, Volume(labels, ijk_to_ras, name), name=name, class_name="vtkMRMLLabelMapVolumeNode"
    )
    if color_node is not None and node.GetDisplayNode() is not None:
        node.GetDisplayNode().SetAndObserveColorNodeID(color_node.GetID())
    return node


def load_volume_file(
    scene: slicer.vtkMRMLScene, path: str, name: str | None = None
) -> slicer.vtkMRMLScalarVolumeNode:
    """Read an image file into a new scalar volume node through Slicer's archetype storage node.

    The same reader Slicer's "Add data" uses for .nrrd/.nii.gz/.mha, available without the application.
    """
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name or "")
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(path))
    node.SetAndObserveStorageNodeID(storage.GetID())
    if not storage.ReadData(node):
        scene.RemoveNode(node)
        scene.RemoveNode(storage)
        raise InputError(f"Slicer could not read '{path}' as a volume; check the file exists and its format.")
    if not name:
        node.SetName(Path(path).name.split(".")[0])
    node.CreateDefaultDisplayNodes()
    return node
