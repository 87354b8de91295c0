"""Frozen backbone features of CT volumes: extraction (tiled), the features file, the disk cache.

Public names are loaded lazily so that ``import voxelfm.features`` does not import torch until it is needed.
"""

from __future__ import annotations

from ..lazy import lazy_getattr

_WHERE = {
    "VolumeFeatures": ".volume_features",
    "FEATURES_FORMAT_VERSION": ".volume_features",
    "extract_features": ".extract",
    "forward_prepared": ".extract",
    "default_preprocess_for": ".extract",
    "model_identity": ".extract",
    "FeatureCache": ".cache",
}

__all__ = sorted(_WHERE)

__getattr__ = lazy_getattr(__name__, _WHERE)
