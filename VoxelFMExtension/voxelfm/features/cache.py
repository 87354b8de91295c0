"""On-disk cache of VolumeFeatures keyed by (volume content hash, model identity, preprocessing, tiling).

Location: ``$VOXELFM_CACHE_DIR/features`` (default ``~/.cache/voxelfm/features``). Entries are plain .npz
files, written atomically, so several Slicer/CLI processes can share the cache safely.

Self-healing: an entry that cannot be read (truncated by a full disk, a copied-over cache, bit rot; numpy
raises BadZipFile, EOFError, ValueError, ...) is a miss: logged, removed, and recomputed by the caller, never
a crash. Entries are also checked for the arrays and finite values a features file must hold.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..files.locations import cache_root
from .identity import IDENTITY_KEYS
from .volume_features import FEATURES_FORMAT_VERSION, VolumeFeatures

if TYPE_CHECKING:
    from .volume_features import VolumeFeatures

log = logging.getLogger(__name__)


class FeatureCache:
    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = Path(folder) if folder is not None else cache_root() / "features"

    @staticmethod
    def key(
        volume_hash: str, model: dict[str, Any], preprocess: dict[str, Any], extraction: dict[str, Any]
    ) -> str:
        payload = {
            "v": FEATURES_FORMAT_VERSION,
            "volume": volume_hash,
            "model": {k: model.get(k) for k in IDENTITY_KEYS},
            "preprocess": preprocess,
            "extraction": extraction,
        }
        blob = json.dumps(payload, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:40]

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.npz"

    def get(self, key: str) -> VolumeFeatures | None:
        """The cached features, or None (a miss) when absent or unreadable; an unreadable entry is removed."""
        p = self.path(key)
        if not p.is_file():
            return None
        try:
            feats = VolumeFeatures.load(p)
            _check_entry(feats)
        except Exception as exc:  # any failure to read an entry is a miss, never a crash
            log.warning(
                "Feature cache entry %s is unreadable (%s); removed, the features are recomputed.", p, exc
            )
            p.unlink(missing_ok=True)
            return None
        with contextlib.suppress(OSError):  # the entry's time of last use (a size budget removes the oldest)
            os.utime(p)
        return feats

    def put(self, key: str, feats: VolumeFeatures) -> Path:
        return feats.save(self.path(key))

    def clear(self) -> int:
        n = 0
        for p in self.folder.glob("*.npz"):
            p.unlink()
            n += 1
        return n


def _check_entry(feats: VolumeFeatures) -> None:
    """ValueError unless the entry has the shapes and finite values features always have."""
    c = feats.cls.shape[-1] if feats.cls.ndim == 1 else -1
    if c < 1 or feats.patch.ndim != 4 or feats.patch.shape[-1] != c or feats.registers.shape[-1:] != (c,):
        raise ValueError("inconsistent array shapes")
    if feats.grid_to_ras.shape != (4, 4):
        raise ValueError("grid_to_ras is not 4x4")
    if not all(np.isfinite(a).all() for a in (feats.cls, feats.registers, feats.patch, feats.grid_to_ras)):
        raise ValueError("non-finite values")
