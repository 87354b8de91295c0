"""Shared pieces of the retrieval tests: a tiny random backbone, real CTs, altered copies, synthetic cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from voxelfm.imaging.resample import resample_to_grid, shift_matrix
from voxelfm.imaging.volume import Volume
from voxelfm.retrieval.embeddings import CaseEmbeddings
from voxelfm.retrieval.vector_index import normalise

# real CTs of distinct patients (abdomen_3mm is a crop of torso_3mm and is used as its query, never added)
LIBRARY_CTS = {
    "torso": "totalseg/torso_3mm/ct.nii.gz",
    "pulmonary": "totalseg/pulmonary_1p5mm/ct.nii.gz",
    "elastix": "public_ct/elastix_lung_small/3DCT_lung_baseline_small.mha",
    "chest": "totalseg/chest_dicom/dicom",
}
ABDOMEN_IN_TORSO = 82  # abdomen_3mm is torso_3mm[82:112] (same voxels; its header origin was not moved)
ALTERATIONS = ("crop", "shift", "noise", "flip", "resample")
# the same patient stored differently (issue: storage must not change the answer)
COPIES = ("flip_i", "flip_j", "flip_k", "oblique", "crop_noise", "resample")
IDENTITY = {"id": "test-backbone", "revision": None, "sha256": "a" * 64}


def tiny_backbone(folder: Path, seed: int = 0, embed_dim: int = 96) -> Path:
    import torch

    from voxelfm.model import BackboneConfig, VoxelFMBackbone
    from voxelfm.model.checkpoint import save_backbone

    torch.manual_seed(seed)
    return save_backbone(VoxelFMBackbone(BackboneConfig(embed_dim=embed_dim, depth=2, num_heads=2)), folder)


def altered(volume: Volume, kind: str, seed: int = 0) -> Volume:
    """A copy of ``volume`` changed the way archives differ: cropped, shifted, noisy, mirrored or resampled."""
    rng = np.random.default_rng(seed)
    a, m = np.asarray(volume.array, dtype=np.float32), volume.ijk_to_ras
    k, j, i = a.shape
    if kind == "crop":  # ~6% off each side in-plane, up to 2 slices top and bottom
        dj, di, dk = max(1, j // 16), max(1, i // 16), min(2, max(0, (k - 16) // 2))
        return Volume(a[dk : k - dk, dj : j - dj, di : i - di].copy(), m @ shift_matrix((dk, dj, di)), "crop")
    if kind == "shift":  # content moved by 3% of the width, the gap filled with air
        s = max(1, i // 32)
        out = np.full_like(a, -1000.0)
        out[:, :, s:] = a[:, :, : i - s]
        return Volume(out, m, "shift")
    if kind == "noise":
        return Volume(a + rng.normal(0.0, 25.0, a.shape).astype(np.float32), m, "noise")
    if kind == "flip":  # the same image stored mirrored (i reversed, geometry adjusted)
        flip = np.eye(4)
        flip[0, 0], flip[0, 3] = -1.0, i - 1
        return Volume(a[:, :, ::-1].copy(), m @ flip, "flip")
    if kind in ("flip_i", "flip_j", "flip_k"):  # stored with one index axis reversed (same physical image)
        axis = "ijk".index(kind[-1])
        flip = np.eye(4)
        flip[axis, axis], flip[axis, 3] = -1.0, volume.shape_ijk[axis] - 1
        return Volume(np.ascontiguousarray(np.flip(a, axis=2 - axis)), m @ flip, kind)
    if kind == "oblique":
        return oblique(volume, 20.0)
    if kind == "crop_noise":
        cropped = altered(volume, "crop", seed)
        noise = rng.normal(0.0, 25.0, cropped.array.shape).astype(np.float32)
        return Volume(cropped.array + noise, cropped.ijk_to_ras, kind)
    if kind == "resample":  # 1.25x coarser voxels in every direction
        shape = tuple(max(2, int(round(n / 1.25))) for n in a.shape)
        scale = np.eye(4)
        scale[:3, :3] = np.diag(
            [(n - 1) / max(s - 1, 1) for n, s in zip(a.shape[::-1], shape[::-1], strict=True)]
        )
        target = m @ scale
        return Volume(resample_to_grid(a, m, shape, target, mode="linear"), target, "resample")
    raise ValueError(kind)


def oblique(volume: Volume, degrees: float = 20.0) -> Volume:
    """The image resampled onto a grid rotated by ``degrees`` about its k axis, same spacing, large enough to
    hold the whole original (air around it), as a tilted acquisition of the same anatomy would be stored."""
    t = np.deg2rad(degrees)
    rot = np.array([[np.cos(t), -np.sin(t), 0.0], [np.sin(t), np.cos(t), 0.0], [0.0, 0.0, 1.0]])
    m = np.asarray(volume.ijk_to_ras, dtype=np.float64)
    axes = volume.direction @ rot @ np.diag(volume.spacing)  # index axes turned about k, spacings kept
    n = np.asarray(volume.shape_ijk, dtype=np.float64)
    corners = np.array(
        [[i, j, k, 1.0] for i in (-0.5, n[0] - 0.5) for j in (-0.5, n[1] - 0.5) for k in (-0.5, n[2] - 0.5)]
    )
    ras = corners @ m.T
    centre = ras[:, :3].mean(axis=0)
    idx = (ras[:, :3] - centre) @ np.linalg.inv(axes).T  # corners in the rotated index frame
    size = np.ceil(idx.max(axis=0) - idx.min(axis=0)).astype(int)
    target = np.eye(4)
    target[:3, :3] = axes
    target[:3, 3] = centre - axes @ ((size - 1) / 2.0)
    arr = resample_to_grid(volume.array, m, tuple(size[::-1]), target, "linear", -1000.0)
    return Volume(arr, target, "oblique")


def synthetic_embeddings(
    rng: np.random.Generator, dim: int = 16, scales: int = 3, blocks: int = 6
) -> CaseEmbeddings:
    """Random unit embeddings of one case (blocks at made-up RAS centres)."""
    vec = normalise(rng.normal(size=(2, dim)))
    return CaseEmbeddings(
        cls=vec[0],
        mean=vec[1],
        blocks=[normalise(rng.normal(size=(blocks, dim))) for _ in range(scales)],
        centres=[rng.uniform(-100, 100, size=(blocks, 3)).astype(np.float32) for _ in range(scales)],
        block_mm=[30.0, 60.0, 120.0][:scales],
    )
