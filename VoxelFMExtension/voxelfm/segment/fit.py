"""Fit a few-shot segmentation probe from a sparse label volume on cached features."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..features.identity import backbone_record
from ..imaging.volume import Volume
from .classes import SegmentClass, classes_for
from .config import SegmentationConfig
from .context import SegmentationContext
from .labels import LabelledVoxels, balanced_sample, labelled_voxels
from .linear_fit import fit_softmax
from .probe import SegmentationProbe
from .voxel_features import FitBasis, grid_index_of_ras, sample_patch_features


def _to_feature_space(weight: np.ndarray, basis: FitBasis) -> np.ndarray:
    """Weights on basis rows -> weights on standardised patch features [K+1, C]."""
    w = weight if basis.proj is None else weight @ basis.proj.T
    return np.ascontiguousarray(w, dtype=np.float32)


def fit_segmentation(
    volume: Volume,
    features: Any,
    labels_volume: Volume,
    config: SegmentationConfig | None = None,
    classes: Sequence[SegmentClass] | None = None,
    context: SegmentationContext | None = None,
) -> SegmentationProbe:
    """Fit a probe from a sparse label volume (0 background, 1..254 structures, 255 unlabelled).

    ``labels_volume`` may be on any grid aligned in physical space with ``volume``; its array is never modified.
    ``classes`` names label values (others get a default name and colour).
    """
    cfg = config or SegmentationConfig()
    if not cfg.use_patch_features and not cfg.intensity.enabled:
        raise InputError("Nothing to fit: enable patch features and/or intensity features.")
    t0 = time.perf_counter()
    ctx = context or SegmentationContext(volume, features)
    lv: LabelledVoxels = labelled_voxels(
        labels_volume.array, labels_volume.ijk_to_ras, tuple(volume.array.shape), volume.ijk_to_ras
    )
    k1 = len(lv.values) + 1
    pick = balanced_sample(lv.cls, k1, cfg.max_per_class, cfg.seed)
    kji, y = lv.kji[pick], lv.cls[pick]
    blocks: list[torch.Tensor] = []
    feat_mean = feat_std = None
    if cfg.use_patch_features:
        basis = ctx.fit_basis(cfg.pca_dim)
        feat_mean, feat_std = basis.mean, basis.std
        ras = kji[:, ::-1].astype(np.float64) @ volume.ijk_to_ras[:3, :3].T + volume.ijk_to_ras[:3, 3]
        grid_ijk = grid_index_of_ras(ctx.grid_to_ras(), ras)
        blocks.append(sample_patch_features(basis.rows, ctx.patch_cdhw().shape[1:], grid_ijk))
    n_patch = blocks[0].shape[1] if blocks else 0
    if cfg.intensity.enabled:
        blocks.append(torch.from_numpy(ctx.intensity(cfg.intensity).basis_at(kji)))
    x = torch.cat(blocks, dim=1)
    fit = fit_softmax(x, torch.from_numpy(y), k1, cfg.weight_decay, cfg.max_iter)
    strength = cfg.prior_strength if cfg.prior_strength is not None else (0.5 if lv.full_slices else 0.0)
    freq = np.array([lv.counts[v] for v in [0, *lv.values]], dtype=np.float64)
    fit.bias = fit.bias + strength * np.log(freq / freq.sum())
    backbone = backbone_record(getattr(features, "model", None)) if cfg.use_patch_features else {}
    return SegmentationProbe(
        classes=classes_for(lv.values, classes),
        config=dataclasses.replace(cfg),
        patch_weight=_to_feature_space(fit.weight[:, :n_patch], basis) if cfg.use_patch_features else None,
        feat_mean=feat_mean.astype(np.float32) if feat_mean is not None else None,
        feat_std=feat_std.astype(np.float32) if feat_std is not None else None,
        intensity_coef=fit.weight[:, n_patch:].astype(np.float32) if cfg.intensity.enabled else None,
        bias=fit.bias.astype(np.float32),
        backbone=backbone,
        preprocess=dict(getattr(features, "preprocess", None) or {}) if cfg.use_patch_features else {},
        metrics={
            "labelled_voxels": {str(k): v for k, v in lv.counts.items()},
            "fit_samples": int(len(y)),
            "train_balanced_accuracy": fit.train_accuracy,
            "lbfgs_evaluations": fit.iterations,
            "prior_strength": strength,
            "fully_labelled_slices": lv.full_slices,
            "fit_seconds": round(time.perf_counter() - t0, 4),
            "warnings": lv.warnings,
        },
    )
