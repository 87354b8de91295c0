"""Patch-feature correspondence: context descriptors at points, similarity maps, peaks, sub-cell search.

A point's descriptor is the reference's patch features (centred: minus the scan's mean feature) sampled at the
point and at its neighbours up to ``context`` cells away (a (2R+1)^3 block); its match in a target is where the
target's block of features is most similar (cosine over the whole block). Two measured reasons:
* whitening: a handful of directions carry most of the feature variance (82 % in the first component for
  voxelfm-tiny, mostly "air or body"), so raw cosines are ~0.99 everywhere and the best match is arbitrary.
  Features are projected on the target's top principal components, scaled to unit variance.
* context: a single patch feature changes when the grid is shifted by a fraction of a patch; a block of
  neighbouring features is far more distinctive and tolerant. A block wider than a thin scan (a 40 mm slab)
  matches worse than the single patch, so candidates come from both maps (benchmark: results/localisation.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from .points import ijk_to_ras_points, ras_to_ijk


@dataclass
class Whitening:
    """Projection of centred features onto the top principal components, scaled to unit variance."""

    proj: torch.Tensor  # [C, P]

    @classmethod
    def fit(cls, rows: torch.Tensor, dim: int | None) -> Whitening:
        """From [M, C] centred feature rows; ``dim`` None or >= C = no reduction (still whitened)."""
        c = rows.shape[1]
        cov = (rows.T.double() @ rows.double()) / max(len(rows) - 1, 1)
        evals, evecs = torch.linalg.eigh(cov)
        order = torch.argsort(evals, descending=True)
        keep = order[: min(c, dim or c, max(1, len(rows) - 1))]
        scale = evals[keep].clamp_min(evals[order[0]] * 1e-6).sqrt()
        return cls((evecs[:, keep] / scale[None, :]).float())

    def __call__(self, centred: torch.Tensor) -> torch.Tensor:
        """[..., C] centred features -> [..., P] whitened (not normalised)."""
        return centred @ self.proj


def context_offsets(block_kji: tuple[int, int, int]) -> np.ndarray:
    """Cell offsets (i, j, k) of a block of odd sides [kz, ky, kx], k slowest (a conv kernel's [z, y, x] order)."""
    rk, rj, ri = (int(n) // 2 for n in block_kji)
    return np.array(
        [[i, j, k] for k in range(-rk, rk + 1) for j in range(-rj, rj + 1) for i in range(-ri, ri + 1)],
        dtype=np.float64,
    )


@dataclass
class FeatureField:
    """A volume's centred patch features [C, d, h, w] and their whitening (fitted here unless given)."""

    raw: torch.Tensor  # [C, d, h, w] centred features
    white: torch.Tensor  # [P, d, h, w] whitened features
    grid_to_ras: np.ndarray  # 4x4: cell (i, j, k, 1) -> RAS of its centre
    whitening: Whitening

    @classmethod
    def build(
        cls,
        patch: np.ndarray,
        grid_to_ras: np.ndarray,
        whitening: Whitening | None = None,
        dim: int | None = 32,
    ) -> FeatureField:
        """From [d, h, w, C] features (e.g. ``VolumeFeatures.patch``)."""
        p = torch.from_numpy(np.ascontiguousarray(patch, dtype=np.float32))
        centred = p - p.reshape(-1, p.shape[-1]).mean(0)
        white = whitening or Whitening.fit(centred.reshape(-1, centred.shape[-1]), dim)
        raw = centred.permute(3, 0, 1, 2).contiguous()
        return cls(
            raw, white(centred).permute(3, 0, 1, 2).contiguous(), np.asarray(grid_to_ras, np.float64), white
        )

    @property
    def shape_dhw(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.raw.shape[1:])  # type: ignore[return-value]

    @property
    def cell_mm(self) -> float:
        return float(np.linalg.norm(self.grid_to_ras[:3, 0]))

    def cell_of(self, ras: np.ndarray) -> np.ndarray:
        """Continuous cell indices (i, j, k) of RAS points [N,3]."""
        return ras_to_ijk(self.grid_to_ras, ras)

    def ras_of(self, ijk: np.ndarray) -> np.ndarray:
        return ijk_to_ras_points(self.grid_to_ras, ijk)

    def block_shape(self, radius: int) -> tuple[int, int, int]:
        """Block sides [kz, ky, kx] = 2R+1 (cells beyond the field's edge repeat the edge)."""
        return (2 * int(radius) + 1,) * 3  # type: ignore[return-value]

    def descriptor(self, ras: np.ndarray, radius: int) -> torch.Tensor:
        """Raw centred features of the block around each RAS point: [N, kz, ky, kx, C]."""
        block = self.block_shape(radius)
        offs = context_offsets(block)
        ijk = self.cell_of(ras)
        rows = sample_grid(self.raw, (ijk[:, None, :] + offs[None]).reshape(-1, 3))
        return rows.reshape(len(ijk), *block, -1)


def sample_grid(grid: torch.Tensor, ijk: np.ndarray) -> torch.Tensor:
    """Trilinear samples of a [C, d, h, w] grid at continuous cell indices [M,3] (border-clamped) -> [M, C]."""
    c, d, h, w = grid.shape
    size = np.array([w, h, d], dtype=np.float64)
    norm = np.where(
        size > 1, 2.0 * np.asarray(ijk, np.float64).reshape(-1, 3) / np.maximum(size - 1, 1) - 1.0, 0.0
    )
    g = torch.from_numpy(norm.astype(np.float32)).view(1, 1, 1, -1, 3)
    out = F.grid_sample(grid[None], g, mode="bilinear", padding_mode="border", align_corners=True)
    return out.view(c, -1).T


def _kernel(desc: torch.Tensor, field: FeatureField) -> torch.Tensor:
    """[kz, ky, kx, C] raw block -> a unit-norm conv kernel [P, kz, ky, kx] in the field's whitening."""
    kern = field.whitening(desc).permute(3, 0, 1, 2)
    return kern / kern.norm().clamp_min(1e-12)


def similarity_maps(desc: torch.Tensor, field: FeatureField) -> np.ndarray:
    """Block cosine similarity of descriptors [N, kz, ky, kx, C] at every cell of ``field``: [N, d, h, w]."""
    block = tuple(int(s) for s in desc.shape[1:4])
    pad = tuple(s // 2 for s in block)
    kernels = torch.stack([_kernel(d, field) for d in desc])  # [N, P, kz, ky, kx]
    num = F.conv3d(field.white[None], kernels, padding=pad)[0]
    energy = (field.white**2).sum(0, keepdim=True)[None]
    den = F.conv3d(energy, torch.ones(1, 1, *block), padding=pad)[0, 0].sqrt().clamp_min(1e-6)
    return (num / den).numpy()


def block_similarity(desc: torch.Tensor, field: FeatureField, ijk: np.ndarray) -> np.ndarray:
    """Block cosine of one descriptor [kz, ky, kx, C] at continuous cells [M,3] (sub-cell) -> [M]."""
    offs = context_offsets(tuple(desc.shape[:3]))
    k = len(offs)
    rows = sample_grid(field.white, (np.asarray(ijk)[:, None, :] + offs[None]).reshape(-1, 3))
    block = rows.reshape(len(ijk), k, -1)
    kern = field.whitening(desc.reshape(k, -1))
    num = (block * kern[None]).sum(dim=(1, 2))
    den = block.flatten(1).norm(dim=1).clamp_min(1e-6) * kern.norm().clamp_min(1e-12)
    return (num / den).numpy()


def peaks(sim: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``count`` local maxima (3x3x3 neighbourhood) of a [d, h, w] map: cell (i, j, k) [M,3], values [M]."""
    is_max = sim >= ndimage.maximum_filter(sim, size=3, mode="nearest")
    kji = np.argwhere(is_max)
    vals = sim[tuple(kji.T)]
    order = np.argsort(-vals, kind="stable")[: max(1, int(count))]
    return kji[order][:, ::-1].astype(np.float64), vals[order]


def local_search(
    descs: list[torch.Tensor],
    field: FeatureField,
    start_ijk: np.ndarray,
    radius: float = 1.0,
    step: float = 0.25,
) -> tuple[np.ndarray, float]:
    """Best sub-cell position near ``start_ijk`` on the interpolated field (cell units): (ijk [3], cosine),
    averaged over several descriptors [K, C] of one point (one per reference)."""
    offs = np.arange(-radius, radius + 1e-9, step)
    grid = np.stack(np.meshgrid(offs, offs, offs, indexing="ij"), axis=-1).reshape(-1, 3)
    size = np.array(field.shape_dhw[::-1], dtype=np.float64)
    cand = np.clip(np.asarray(start_ijk, np.float64)[None, :] + grid, 0.0, size - 1)
    sim = np.mean([block_similarity(d, field, cand) for d in descs], axis=0)
    best = int(np.argmax(sim))
    return cand[best], float(sim[best])
