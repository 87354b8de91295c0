"""Planted feature extractors for the localisation tests: features that depend only on the voxels of each patch.

``PatchEmbedAccess`` embeds every 14^3 patch of a (patient-aligned) volume by a fixed random linear map, like
a ViT's first layer without the transformer: identical voxels give identical features, so a planted match is
exact, and it runs in milliseconds.
"""

from __future__ import annotations

import numpy as np

from voxelfm.features.volume_features import VolumeFeatures
from voxelfm.imaging.resample import patch_grid_to_ras
from voxelfm.localize.access import FeatureAccess

PATCH = 2  # small patches keep the tests fast; the code never assumes 14


def patch_embed(
    volume, dim: int = 24, patch: int = PATCH, seed: int = 0, model: dict | None = None
) -> VolumeFeatures:
    arr = np.asarray(volume.array, np.float32)
    d, h, w = (n // patch for n in arr.shape)
    cells = arr[: d * patch, : h * patch, : w * patch].reshape(d, patch, h, patch, w, patch)
    cells = cells.transpose(0, 2, 4, 1, 3, 5).reshape(d, h, w, -1) / 100.0
    proj = np.random.default_rng(seed).normal(size=(cells.shape[-1], dim)).astype(np.float32)
    feats = np.tanh(cells @ proj / np.sqrt(cells.shape[-1]))
    return VolumeFeatures(
        cls=np.zeros(dim, np.float32),
        registers=np.zeros((1, dim), np.float32),
        patch=feats.astype(np.float32),
        grid_to_ras=patch_grid_to_ras(volume.ijk_to_ras, patch),
        prepared_to_ras=np.asarray(volume.ijk_to_ras),
        prepared_shape=tuple(arr.shape),
        model=dict(model or {"id": "planted", "sha256": "0" * 64}),
    )


def planted_access(seed: int = 0, model: dict | None = None, min_spacing: float = 2.0) -> FeatureAccess:
    ident = dict(model or {"id": "planted", "sha256": f"{seed:064d}"})
    return FeatureAccess(
        lambda volume, cache: patch_embed(volume, seed=seed, model=ident), PATCH, min_spacing, ident
    )
