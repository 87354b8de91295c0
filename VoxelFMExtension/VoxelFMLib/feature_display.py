"""Show a feature grid as a colour volume: the first 3 principal components of the patch features -> RGB.

A quick visual check that features separate anatomy (organs get distinct, smooth colours). The colour
volume lies on the patch grid (``grid_to_ras`` of the features), so it overlays the CT exactly in Slicer.
"""

from __future__ import annotations

import numpy as np
import slicer
from voxelfm.errors import InputError

from .volume_nodes import numpy_to_matrix


def pca_rgb(patch: np.ndarray, clip_percentile: float = 1.0, max_fit_tokens: int = 50000, seed: int = 0) -> np.ndarray:
    """[d, h, w, C] features -> uint8 [d, h, w, 3]: PCA components 1..3 scaled to 0..255 per channel.

    The PCA basis is fitted on at most ``max_fit_tokens`` random cells (enough for 3 components), then
    applied to all cells. Components are robustly scaled between the given low/high percentiles.
    """
    patch = np.asarray(patch)
    if patch.ndim != 4:
        raise InputError(f"Patch features must be [d, h, w, C], got shape {patch.shape}.")
    d, h, w, c = patch.shape
    tokens = patch.reshape(-1, c).astype(np.float64)
    if tokens.shape[0] < 2:
        raise InputError("Need at least two feature cells to compute a PCA colour map.")
    rng = np.random.default_rng(seed)
    fit = tokens if tokens.shape[0] <= max_fit_tokens else tokens[rng.choice(tokens.shape[0], max_fit_tokens, False)]
    mean = fit.mean(axis=0)
    _, _, vt = np.linalg.svd(fit - mean, full_matrices=False)
    n = min(3, vt.shape[0])
    proj = (tokens - mean) @ vt[:n].T
    for i in range(n):  # SVD sign is arbitrary: make the largest |value| positive for a stable look
        if abs(proj[:, i].min()) > abs(proj[:, i].max()):
            proj[:, i] = -proj[:, i]
    rgb = np.zeros((tokens.shape[0], 3), dtype=np.float64)
    for i in range(n):
        lo, hi = np.percentile(proj[:, i], [clip_percentile, 100.0 - clip_percentile])
        rgb[:, i] = np.clip((proj[:, i] - lo) / (hi - lo), 0.0, 1.0) if hi > lo else 0.5
    return np.round(rgb * 255.0).astype(np.uint8).reshape(d, h, w, 3)


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
