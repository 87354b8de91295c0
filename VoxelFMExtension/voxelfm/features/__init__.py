"""Frozen backbone features of CT volumes: extraction (tiled), the features file, the disk cache.

Public names are loaded lazily so that ``import voxelfm.features`` does not import torch until it is needed.
"""

from __future__ import annotations

from ..lazy import lazy_exports

_EXPORTS = {
    ".volume_features": ("VolumeFeatures", "FEATURES_FORMAT_VERSION"),
    ".extract": ("extract_features", "forward_prepared", "default_preprocess_for", "model_identity"),
    ".cache": ("FeatureCache",),
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
