"""On-disk cache of VolumeFeatures keyed by (volume content hash, model identity, preprocessing, tiling).

Location: ``$VOXELFM_CACHE_DIR/features`` (default ``~/.cache/voxelfm/features``). Entries are plain .npz
files, written atomically, so several Slicer/CLI processes can share the cache safely.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..files.locations import cache_root

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
        from .volume_features import FEATURES_FORMAT_VERSION

        payload = {
            "v": FEATURES_FORMAT_VERSION,
            "volume": volume_hash,
            "model": {k: model.get(k) for k in ("id", "revision", "sha256")},
            "preprocess": preprocess,
            "extraction": extraction,
        }
        blob = json.dumps(payload, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:40]

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.npz"

    def get(self, key: str) -> VolumeFeatures | None:
        from ..errors import InputError
        from .volume_features import VolumeFeatures

        p = self.path(key)
        if not p.is_file():
            return None
        try:
            return VolumeFeatures.load(p)
        except InputError:
            log.warning("Ignoring unreadable feature cache entry %s", p)
            return None

    def put(self, key: str, feats: VolumeFeatures) -> Path:
        return feats.save(self.path(key))

    def clear(self) -> int:
        n = 0
        for p in self.folder.glob("*.npz"):
            p.unlink()
            n += 1
        return n
