"""A fitted few-shot localisation probe: the soft-argmax head, the feature scaling, the grid it expects.

A probe sees a scan exactly as at fitting: on the patient-aligned grid (``canonical``) at its feature spacing,
through the backbone it was fitted with, features standardised with the training mean and std.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ..features.volume_features import VolumeFeatures
from .points import ijk_to_ras_points
from .probe_head import SoftArgmaxHead, grid_coordinates

CONFIDENCE_RADIUS_CELLS = 1.5


@dataclass
class ProbeConfig:
    """Fitting settings (the reference's: AdamW lr 1e-4, SmoothL1, Gaussian feature noise).

    feature_spacing_mm: None = the model's minimum spacing, coarsened until the first case fits ``max_tokens``.
    crop_min: training crops keep a random fraction (crop_min..1) of each axis of the feature grid, so the
        probe does not learn where the landmark sits in the field of view (the reference's crop protocol).
    """

    feature_spacing_mm: float | None = None
    max_tokens: int = 4096
    steps: int = 600
    lr: float = 1e-4
    weight_decay: float = 0.05
    noise_std: float = 0.1  # in units of each feature's standard deviation
    crop_min: float = 0.6
    hidden: int = 128
    heads: int = 4
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProbeConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass
class LocalisationProbe:
    names: list[str]  # landmark names, one score column each
    head: SoftArgmaxHead
    feat_mean: np.ndarray  # [C]
    feat_std: np.ndarray  # [C]
    spacing_mm: float
    backbone: dict[str, Any] = field(default_factory=dict)
    preprocess: dict[str, Any] = field(default_factory=dict)
    config: ProbeConfig = field(default_factory=ProbeConfig)
    metrics: dict[str, Any] = field(default_factory=dict)

    def tokens(self, feats: VolumeFeatures) -> torch.Tensor:
        """Standardised patch tokens [1, N, C] of features on the probe's grid."""
        p = np.asarray(feats.patch, dtype=np.float32).reshape(-1, feats.patch.shape[-1])
        return torch.from_numpy((p - self.feat_mean) / self.feat_std)[None]

    @torch.no_grad()
    def predict(self, feats: VolumeFeatures) -> tuple[np.ndarray, np.ndarray]:
        """(RAS [L, 3], confidence [L]): confidence = the share of the soft-argmax weight within 1.5 cells."""
        self.head.eval()
        shape = feats.grid_shape
        coords = grid_coordinates(shape)[None]
        weights = self.head.weights(self.tokens(feats), coords)[0]  # [L, N]
        points = (weights @ coords[0]).numpy()  # [L, 3] normalised
        size = np.array(shape[::-1], dtype=np.float64)  # (w, h, d) = cells along i, j, k
        ijk = (points + 1.0) / 2.0 * np.maximum(size - 1, 0)
        cells = (coords[0].numpy() + 1.0) / 2.0 * np.maximum(size - 1, 0)
        near = np.linalg.norm(cells[None, :, :] - ijk[:, None, :], axis=2) <= CONFIDENCE_RADIUS_CELLS
        conf = (weights.numpy() * near).sum(axis=1)
        return ijk_to_ras_points(feats.grid_to_ras, ijk), conf
