"""Where VoxelFM keeps its own files (feature cache, hash memos, sample data, pretraining caches)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """VOXELFM_CACHE_DIR, else ~/.cache/voxelfm (read at call time so tests can redirect it)."""
    env = os.environ.get("VOXELFM_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "voxelfm"
