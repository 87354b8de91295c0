"""Few-shot segmentation: fit a probe from sparse labels on cached features, predict on the original grid.

    ctx = SegmentationContext(volume, features)            # per-volume caches (intensity maps, upsampler)
    probe = fit_segmentation(volume, features, labels, SegmentationConfig(), context=ctx)
    result = probe.predict(volume, features, context=ctx)  # labelmap [k,j,i] on volume's grid

Refits with a reused context only redo sampling, an LBFGS fit and one interpolation pass.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..imaging.volume import Volume
from .labels import LabelledVoxels, balanced_sample, labelled_voxels
from .linear_fit import fit_softmax
from .postprocess import PostprocessConfig, postprocess_labelmap
from .voxel_features import (
    FitBasis,
    IntensityConfig,
    IntensityMaps,
    LogitUpsampler,
    fit_basis,
    grid_index_of_ras,
    sample_patch_features,
)

SLAB = 4  # slices per prediction slab

PALETTE = [
    (0.90, 0.30, 0.24),
    (0.20, 0.60, 0.86),
    (0.18, 0.80, 0.44),
    (0.95, 0.77, 0.06),
    (0.61, 0.35, 0.71),
    (0.90, 0.49, 0.13),
    (0.10, 0.74, 0.61),
    (0.93, 0.44, 0.64),
    (0.58, 0.65, 0.65),
    (0.40, 0.26, 0.13),
]


@dataclass
class SegmentationConfig:
    use_patch_features: bool = True  # False = intensity-only ablation
    intensity: IntensityConfig = field(default_factory=IntensityConfig)
    weight_decay: float = 1e-3
    max_iter: int = 100
    max_per_class: int = 3000  # sampled labelled voxels per class for a fit
    pca_dim: int | None = 128  # fit on the top principal components when features are wider
    feature_spacing_mm: float | None = None  # features came from an isotropic resampling (recorded for reuse)
    # Class-balanced fits over-predict small structures. With fully labelled slices the labelled class
    # frequencies estimate the true ones; adding prior_strength * log(frequency) to the logits corrects that
    # (0.5 = halfway, best on the benchmark). None = auto: 0.5 for fully labelled slices, 0 for scribbles.
    prior_strength: float | None = None
    seed: int = 0
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)

    def to_dict(self) -> dict[str, Any]:
        return {
            "use_patch_features": self.use_patch_features,
            "intensity": self.intensity.to_dict(),
            "weight_decay": self.weight_decay,
            "max_iter": self.max_iter,
            "max_per_class": self.max_per_class,
            "pca_dim": self.pca_dim,
            "feature_spacing_mm": self.feature_spacing_mm,
            "prior_strength": self.prior_strength,
            "seed": self.seed,
            "postprocess": {
                "largest_component": self.postprocess.largest_component,
                "fill_holes": self.postprocess.fill_holes,
            },
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SegmentationConfig:
        return cls(
            use_patch_features=bool(d.get("use_patch_features", True)),
            intensity=IntensityConfig.from_dict(d.get("intensity", {})),
            weight_decay=float(d.get("weight_decay", 1e-3)),
            max_iter=int(d.get("max_iter", 100)),
            max_per_class=int(d.get("max_per_class", 3000)),
            pca_dim=d.get("pca_dim", 128),
            feature_spacing_mm=d.get("feature_spacing_mm"),
            prior_strength=d.get("prior_strength"),
            seed=int(d.get("seed", 0)),
            postprocess=PostprocessConfig(**d.get("postprocess", {})),
        )


def _patch_array(features: Any) -> np.ndarray:
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
            p = _patch_array(self.features)
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


@dataclass
class SegmentationResult:
    labelmap: np.ndarray  # [k,j,i] uint8, values = class_values, on the volume's grid
    probabilities: np.ndarray | None  # [K+1,k,j,i] float16 (index 0 = background) or None
    class_names: list[str]  # index 0 = "background"
    class_values: list[int]  # label value per probability channel (0 first)
    ijk_to_ras: np.ndarray
    warnings: list[str] = field(default_factory=list)


@dataclass
class SegmentationProbe:
    class_values: list[int]  # structure label values (1..254), K entries
    class_names: list[str]
    class_colors: list[tuple[float, float, float]]
    config: SegmentationConfig
    patch_weight: np.ndarray | None  # [K+1, C] on standardised features
    feat_mean: np.ndarray | None  # [C]
    feat_std: np.ndarray | None  # [C]
    intensity_coef: np.ndarray | None  # [K+1, sum(n_knots)]
    bias: np.ndarray  # [K+1]
    model: dict[str, Any] = field(default_factory=dict)  # backbone id / revision / sha256
    preprocess: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_values)

    def _check_features(self, features: Any) -> None:
        if self.patch_weight is None:
            return
        c = _patch_array(features).shape[-1]
        if c != self.patch_weight.shape[1]:
            raise InputError(
                f"Features have {c} channels but this probe was fitted on {self.patch_weight.shape[1]}; extract "
                f"features with the probe's model ({self.model.get('id', 'unknown')})."
            )
        theirs = (getattr(features, "model", None) or {}).get("sha256")
        ours = self.model.get("sha256")
        if theirs and ours and theirs != ours:
            raise InputError(
                f"Features come from model sha256 {theirs[:12]}… but the probe was fitted on {ours[:12]}… "
                f"({self.model.get('id', 'unknown')}); re-extract features with that model."
            )

    def delta_slabs(self, volume: Volume, features: Any, context: SegmentationContext | None = None):
        """A function (k0, k1) -> logits minus the background logit, classes 1..K: [K, k1-k0, j, i] float32."""
        ctx = context or SegmentationContext(volume, features)
        k = self.num_classes
        shape = tuple(volume.array.shape)
        if self.patch_weight is not None:
            self._check_features(features)
            w = self.patch_weight / self.feat_std[None, :]
            b = self.bias - w @ self.feat_mean
            dw = torch.from_numpy((w[1:] - w[0:1]).astype(np.float32))
            db = torch.from_numpy((b[1:] - b[0]).astype(np.float32))
            grid = torch.einsum("kc,cdhw->kdhw", dw, ctx.patch_cdhw()) + db[:, None, None, None]
            base = ctx.upsampler().slabs(grid)
        else:
            const = (self.bias[1:] - self.bias[0]).astype(np.float32)[:, None, None, None]

            def base(k0: int, k1: int) -> np.ndarray:
                return np.broadcast_to(const, (k, k1 - k0, *shape[1:])).copy()

        if self.intensity_coef is None:
            return base
        maps = ctx.intensity(self.config.intensity)
        tables = [maps.tables(self.intensity_coef[c + 1] - self.intensity_coef[0]) for c in range(k)]

        def slab(k0: int, k1: int) -> np.ndarray:
            d = base(k0, k1)
            for c in range(k):
                maps.add_to(d[c], tables[c], k0)
            return d

        return slab

    def delta_logits(
        self, volume: Volume, features: Any, context: SegmentationContext | None = None
    ) -> np.ndarray:
        """Logits minus the background logit for classes 1..K on the volume grid: [K,k,j,i] float32."""
        return self.delta_slabs(volume, features, context)(0, volume.array.shape[0])

    def predict(
        self,
        volume: Volume,
        features: Any,
        context: SegmentationContext | None = None,
        with_probabilities: bool = True,
        postprocess: PostprocessConfig | None = None,
    ) -> SegmentationResult:
        slabs = self.delta_slabs(volume, features, context)
        shape = tuple(volume.array.shape)
        k = self.num_classes
        labelmap = np.empty(shape, dtype=np.uint8)
        probs = np.empty((k + 1, *shape), dtype=np.float16) if with_probabilities else None
        values = np.array([0, *self.class_values], dtype=np.uint8)
        for k0 in range(0, shape[0], SLAB):  # slab by slab: the working set stays in cache
            k1 = min(shape[0], k0 + SLAB)
            delta = slabs(k0, k1)
            if k == 1:  # binary: no running argmax needed
                best = np.maximum(delta[0], 0.0)
                labelmap[k0:k1] = (delta[0] > 0).view(np.uint8) * values[1]
            else:
                best = np.zeros(delta.shape[1:], dtype=np.float32)
                idx = np.zeros(delta.shape[1:], dtype=np.uint8)
                for c in range(k):
                    np.copyto(idx, np.uint8(c + 1), where=delta[c] > best)
                    np.maximum(best, delta[c], out=best)
                labelmap[k0:k1] = values[idx]
            if probs is not None:
                e = np.exp(delta - best[None])  # classes 1..K, stabilised by the max (>= 0)
                e0 = np.exp(-best)
                z = e.sum(axis=0) + e0
                probs[0, k0:k1] = e0 / z
                probs[1:, k0:k1] = e / z[None]
        pp = postprocess if postprocess is not None else self.config.postprocess
        labelmap = postprocess_labelmap(labelmap, pp)
        return SegmentationResult(
            labelmap,
            probs,
            ["background", *self.class_names],
            [0, *self.class_values],
            np.asarray(volume.ijk_to_ras, dtype=np.float64).copy(),
        )


def _to_feature_space(weight: np.ndarray, basis: FitBasis) -> np.ndarray:
    """Weights on basis rows -> weights on standardised patch features [K+1, C]."""
    w = weight if basis.proj is None else weight @ basis.proj.T
    return np.ascontiguousarray(w, dtype=np.float32)


def fit_segmentation(
    volume: Volume,
    features: Any,
    labels_volume: Volume,
    config: SegmentationConfig | None = None,
    class_names: dict[int, str] | None = None,
    class_colors: dict[int, tuple[float, float, float]] | None = None,
    context: SegmentationContext | None = None,
) -> SegmentationProbe:
    """Fit a probe from a sparse label volume (0 background, 1..254 structures, 255 unlabelled).

    ``labels_volume`` may be on any grid aligned in physical space with ``volume``; its array is never modified.
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
    names = class_names or {}
    colors = class_colors or {}
    model_meta = dict(getattr(features, "model", None) or {}) if cfg.use_patch_features else {}
    return SegmentationProbe(
        class_values=list(lv.values),
        class_names=[names.get(v, f"structure_{v}") for v in lv.values],
        class_colors=[tuple(colors.get(v, PALETTE[(v - 1) % len(PALETTE)])) for v in lv.values],
        config=dataclasses.replace(cfg),
        patch_weight=_to_feature_space(fit.weight[:, :n_patch], basis) if cfg.use_patch_features else None,
        feat_mean=feat_mean.astype(np.float32) if feat_mean is not None else None,
        feat_std=feat_std.astype(np.float32) if feat_std is not None else None,
        intensity_coef=fit.weight[:, n_patch:].astype(np.float32) if cfg.intensity.enabled else None,
        bias=fit.bias.astype(np.float32),
        model=model_meta,
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
