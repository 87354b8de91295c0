"""Settings of a few-shot segmentation fit (stored in the probe file, so an applied probe behaves as fitted)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .postprocess import PostprocessConfig
from .voxel_features import IntensityConfig


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
            "postprocess": self.postprocess.to_dict(),
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
            postprocess=PostprocessConfig.from_dict(d.get("postprocess", {})),
        )
