"""Show a feature grid as a colour volume: the first 3 principal components of the patch features -> RGB.

A quick visual check that features separate anatomy (organs get distinct, smooth colours). The colour
volume lies on the patch grid (``grid_to_ras`` of the features), so it overlays the CT exactly in Slicer.
"""

from __future__ import annotations

import numpy as np
import slicer

from voxelfm.errors import InputError

from .volume_nodes import numpy_to_matrix


def pca_rgb(patch: np.ndarray) -> np.ndarray:
    """[d, h, w, C] features -> uint8 [d, h, w, 3]: the core's PCA colouring (voxelfm.imaging.pictures) as 0..255."""
    patch = np.asarray(patch)
    if patch.ndim != 4 or patch.shape[0] * patch.shape[1] * patch.shape[2] < 3:
        raise InputError(
            f"Patch features must be [d, h, w, C] with at least 3 cells, got shape {patch.shape}."
        )
    from voxelfm.imaging.pictures import pca_rgb as core_pca_rgb

    rgb = core_pca_rgb(patch)
    if rgb.shape[-1] < 3:  # fewer than 3 channels: pad with zeros
        rgb = np.concatenate([rgb, np.zeros((*rgb.shape[:3], 3 - rgb.shape[-1]), rgb.dtype)], axis=-1)
    return np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)


def create_rgb_volume_node(
    scene: slicer.vtkMRMLScene, rgb: np.ndarray, grid_to_ras: np.ndarray, name: str = "VoxelFM features PCA"
) -> slicer.vtkMRMLVectorVolumeNode:
    """Add a 3-component vector volume (displayed as colour) on the grid ``grid_to_ras``."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim != 4 or rgb.shape[-1] != 3:
        raise InputError(f"An RGB volume must be [k, j, i, 3], got shape {rgb.shape}.")
    node = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", name)
    node.SetIJKToRASMatrix(numpy_to_matrix(grid_to_ras))
    slicer.util.updateVolumeFromArray(node, rgb)
    node.CreateDefaultDisplayNodes()
    return node


def show_features_pca(scene: slicer.vtkMRMLScene, features, name: str = "VoxelFM features PCA"):
    """VolumeFeatures -> PCA colour volume node."""
    return create_rgb_volume_node(scene, pca_rgb(features.patch), features.grid_to_ras, name)
