"""Per-(volume, features) caches reused across refits: patch grid tensor, intensity maps, logit upsampler."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..imaging.volume import Volume
from .voxel_features import FitBasis, IntensityConfig, IntensityMaps, LogitUpsampler, fit_basis


def patch_array(features: Any) -> np.ndarray:
    patch = np.asarray(getattr(features, "patch", None) if features is not None else None)
    if patch.ndim != 4:
        raise InputError(f"Features must hold a patch grid [d,h,w,C]; got {getattr(patch, 'shape', None)}.")
    return patch


class SegmentationContext:
    """Per-(volume, features) caches reused across refits: patch grid tensor, intensity maps, upsampler."""

    def __init__(self, volume: Volume, features: Any | None) -> None:
        self.volume = volume
        self.features = features
        self._intensity: dict[str, IntensityMaps] = {}
        self._patch: torch.Tensor | None = None
        self._upsampler: LogitUpsampler | None = None
        self._basis: dict[int | None, FitBasis] = {}

    def patch_cdhw(self) -> torch.Tensor:
        if self._patch is None:
            p = patch_array(self.features)
            self._patch = (
                torch.from_numpy(np.ascontiguousarray(p, dtype=np.float32)).permute(3, 0, 1, 2).contiguous()
            )
        return self._patch

    def fit_basis(self, pca_dim: int | None) -> FitBasis:
        if pca_dim not in self._basis:
            self._basis[pca_dim] = fit_basis(self.patch_cdhw(), pca_dim)
        return self._basis[pca_dim]

    def grid_to_ras(self) -> np.ndarray:
        return np.asarray(self.features.grid_to_ras, dtype=np.float64)

    def intensity(self, cfg: IntensityConfig) -> IntensityMaps:
        key = repr(cfg.to_dict())
        if key not in self._intensity:
            spacing_kji = self.volume.spacing[::-1].copy()
            self._intensity[key] = IntensityMaps(np.asarray(self.volume.array), spacing_kji, cfg)
        return self._intensity[key]

    def upsampler(self) -> LogitUpsampler:
        if self._upsampler is None:
            d, h, w = self.patch_cdhw().shape[1:]
            self._upsampler = LogitUpsampler(
                (d, h, w), self.grid_to_ras(), self.volume.array.shape, self.volume.ijk_to_ras
            )
        return self._upsampler
