"""Embeddings of a case from its frozen features: global (cls, mean-pooled patch tokens) and regional (blocks).

The seed paper retrieves with cosine similarity on the cls token or on mean-pooled patch tokens; we keep both
(L2-normalised), pooled as ``RetrievalConfig.pooling`` says (``pooling.py``: by default the body cells' token
moments, standardised with the library's token statistics at search time). Regional embeddings pool patch tokens
(minus the case's body mean) over small overlapping blocks by their mean and standard deviation and keep each
block's RAS centre, so a region query (the tokens under the region,
pooled alike) finds the case AND the place in it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..imaging.volume import Volume
from .config import RetrievalConfig
from .pooling import cls_vector, describe, global_vector, pooled_mean, pooling_weights
from .regions import MaskRegion, Region, points_in_volume, volume_index
from .vector_index import normalise


@dataclass
class CaseEmbeddings:
    cls: np.ndarray  # [C] unit length
    mean: (
        np.ndarray
    )  # [C] unit length (for "body_standardised": the body tokens' moments, pooling.token_moments)
    blocks: list[np.ndarray]  # per scale: [B_s, C] unit length
    centres: list[np.ndarray]  # per scale: [B_s, 3] RAS mm of each block centre
    block_mm: list[float]  # per scale: edge length of a block (mm) in this case
    tokens: int = 0  # how many tokens ``mean`` pools (weights the case in the library's token statistics)

    @property
    def dim(self) -> int:
        return int(self.mean.shape[-1])

    def check(self, dim: int | None = None, scales: int | None = None) -> CaseEmbeddings:
        """Shapes agree (and match ``dim`` / the library's number of scales); InputError otherwise."""
        c = self.dim
        ok = self.cls.shape == (c,) and len(self.blocks) == len(self.centres) == len(self.block_mm) > 0
        for vectors, centres in zip(self.blocks, self.centres, strict=False):
            ok = ok and vectors.ndim == 2 and vectors.shape[1] == c and centres.shape == (len(vectors), 3)
            ok = ok and len(vectors) > 0
        if not ok:
            shapes = [(v.shape, ce.shape) for v, ce in zip(self.blocks, self.centres, strict=False)]
            raise InputError(
                f"Inconsistent case embeddings: cls {self.cls.shape}, mean {self.mean.shape}, blocks {shapes}."
            )
        if dim is not None and c != dim:
            raise InputError(f"The embeddings have dimension {c}, but this library holds {dim}-d embeddings.")
        if scales is not None and len(self.blocks) != scales:
            raise InputError(f"The embeddings have {len(self.blocks)} block scales, the library {scales}.")
        return self


def patch_mm(grid_to_ras: np.ndarray) -> float:
    """Edge length of one patch cell in mm."""
    return float(np.linalg.norm(np.asarray(grid_to_ras, dtype=np.float64)[:3, :3], axis=0).mean())


def _starts(n: int, block: int, stride: int) -> list[tuple[int, int]]:
    """(start, size) of the blocks along one axis: every ``stride`` cells, the last one flush with the end."""
    if n <= block:
        return [(0, n)]
    starts = list(range(0, n - block + 1, stride))
    if starts[-1] != n - block:
        starts.append(n - block)
    return [(s, block) for s in starts]


def block_embeddings(
    patch: np.ndarray, grid_to_ras: np.ndarray, block: int, stride: int, config: RetrievalConfig | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Pooled patch tokens of each block (``pooling.describe``) and its RAS centre: ([B, D] unit rows, [B, 3])."""
    config = config or RetrievalConfig(pooling="mean")
    d, h, w, c = patch.shape
    vectors, cells = [], []
    for k0, nk in _starts(d, block, stride):
        for j0, nj in _starts(h, block, stride):
            for i0, ni in _starts(w, block, stride):
                cube = patch[k0 : k0 + nk, j0 : j0 + nj, i0 : i0 + ni].reshape(-1, c)
                vectors.append(describe(cube, config))
                cells.append((i0 + (ni - 1) / 2, j0 + (nj - 1) / 2, k0 + (nk - 1) / 2))
    m = np.asarray(grid_to_ras, dtype=np.float64)
    centres = np.asarray(cells) @ m[:3, :3].T + m[:3, 3]
    return normalise(np.asarray(vectors)), centres.astype(np.float32)


def _tokens(features, config: RetrievalConfig | None = None, weights: np.ndarray | None = None) -> np.ndarray:
    """The patch grid [d, h, w, C] as regions pool it: minus the mean of the ``weights`` tokens (all by default)
    with ``config.center_regions``."""
    patch = np.asarray(features.patch, dtype=np.float32)
    if patch.ndim != 4 or patch.size == 0:
        raise InputError(f"Features must hold a patch grid [d, h, w, C]; got shape {patch.shape}.")
    if config is not None and config.center_regions:
        w = np.ones(int(np.prod(patch.shape[:3])), dtype=np.float32) if weights is None else weights
        patch = patch - pooled_mean(features, w).astype(np.float32)
    return patch


def embed_features(features, config: RetrievalConfig, body: np.ndarray | None = None) -> CaseEmbeddings:
    """Global and regional (one set of blocks per scale) embeddings of one case's ``VolumeFeatures``
    (``body``: its ``body_fraction`` map, used by the body poolings)."""
    _tokens(features)  # refuses a malformed patch grid
    weights = pooling_weights(features, config, body)
    tokens = _tokens(features, config, weights)
    cell = patch_mm(features.grid_to_ras)
    blocks, centres, sizes = [], [], []
    for block, stride in config.cells(cell):
        vectors, where = block_embeddings(tokens, features.grid_to_ras, block, stride, config)
        blocks.append(vectors)
        centres.append(where)
        sizes.append(block * cell)
    return CaseEmbeddings(
        cls=cls_vector(features, config),
        mean=global_vector(features, config, body),
        blocks=blocks,
        centres=centres,
        block_mm=sizes,
        tokens=int(weights.sum()),
    )


def _anchor(region: Region, inside: np.ndarray, volume: Volume) -> np.ndarray:
    """The point a region is pooled around: its centre, or for a mask its innermost voxel (a C-shaped structure
    has its centroid outside); the mean of the in-volume points when that point is off the image."""
    if isinstance(region, MaskRegion):
        from scipy import ndimage  # scipy (~0.2 s) only for mask regions

        spacing = np.linalg.norm(np.asarray(region.ijk_to_ras, dtype=np.float64)[:3, :3], axis=0)[::-1]
        depth = ndimage.distance_transform_edt(np.asarray(region.mask) != 0, sampling=spacing)
        k, j, i = np.unravel_index(int(np.argmax(depth)), depth.shape)
        return np.asarray(region.ijk_to_ras, dtype=np.float64) @ np.array([i, j, k, 1.0])
    centre = region.center
    idx = volume_index(volume, centre[None])[0]
    if np.all((idx >= -0.5) & (idx <= np.asarray(volume.shape_ijk) - 0.5)):
        return centre
    return inside[np.argmin(np.linalg.norm(inside - centre, axis=1))]


def region_query(
    features, region: Region, volume: Volume, config: RetrievalConfig, body: np.ndarray | None = None
) -> tuple[np.ndarray, int]:
    """(unit query vector, block scale) of ``region`` in ``volume`` (whose features these are).

    The region picks the block scale nearest its size; the query is the block of that scale around the
    region's anchor point, pooled exactly as the library's blocks are, so the same place in a near-identical
    scan scores ~1 and the best block's centre in another case says where the match is.
    """
    patch = _tokens(features, config, pooling_weights(features, config, body))
    cell = patch_mm(features.grid_to_ras)
    inside = points_in_volume(region, volume, step_mm=cell / 3)  # InputError when the region is off the image
    scale = config.scale_for(region.side_mm)
    block = config.cells(cell)[scale][0]
    m = np.asarray(features.grid_to_ras, dtype=np.float64)
    anchor = _anchor(region, inside, volume)[:3]
    ijk = (anchor - m[:3, 3]) @ np.linalg.inv(m[:3, :3]).T
    sizes = np.array(patch.shape[:3][::-1])  # w, h, d
    size = np.minimum(block, sizes)
    start = np.clip(np.rint(ijk - (size - 1) / 2).astype(np.int64), 0, sizes - size)
    (i0, j0, k0), (ni, nj, nk) = start, size
    cube = patch[k0 : k0 + nk, j0 : j0 + nj, i0 : i0 + ni].reshape(-1, patch.shape[-1])
    return describe(cube, config), scale
