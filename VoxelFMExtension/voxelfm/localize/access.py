"""What localisation needs from a backbone: features of a (patient-aligned) volume, the patch size and the
spacing the model was trained at. The pipeline builds it from the shared feature service; tests plant one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..features.volume_features import VolumeFeatures
from ..imaging.volume import Volume


@dataclass
class FeatureAccess:
    extract: Callable[[Volume, bool], VolumeFeatures]  # (volume, use the disk cache) -> features
    patch_size: int = 14
    min_spacing: float = 1.5  # the model's minimum isotropic spacing (its preprocessing)
    model: dict[str, Any] | None = None  # identity of the backbone (id, sha256, ...), when known

    def features(self, volume: Volume, cache: bool = False) -> VolumeFeatures:
        return self.extract(volume, cache)
