"""The content-addressed volume store: a volume is uploaded once and named by the sha256 of its content.

The address is ``Volume.content_hash()`` (voxel bytes + dtype + shape + ijk_to_ras), the same key the feature
cache uses, so a second user or a refit never uploads again and features are found by it too. Entries are the
uploaded frames (already compressed), written atomically under ``volumes/ab/<sha>.vfm`` so several server
processes can share one folder. Beyond the byte budget the least recently used entries are removed (a read
touches the file's mtime).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..client.wire import decode_frame, frame_header, volume_from_frame
from ..errors import InputError
from ..files.atomic import atomic_write
from ..imaging.volume import Volume
from .cache_budget import evict_least_recent

log = logging.getLogger(__name__)

SHA_PATTERN = re.compile(r"^[0-9a-f]{64}$")
VOLUME_DTYPES = ("uint8", "int8", "uint16", "int16", "int32", "float32", "float64")
SPACING_RANGE_MM = (1e-3, 100.0)


class TooLargeError(InputError):
    """Over a size or voxel limit (HTTP 413)."""


def check_sha(sha: str) -> str:
    if not SHA_PATTERN.match(sha):
        raise InputError(f"volume address {sha!r} is not a sha256 hex digest (64 lowercase hex digits).")
    return sha


def check_volume_header(header: dict, max_voxels: int) -> None:
    """Shape, dtype, size and geometry of an uploaded volume frame, before anything is decompressed."""
    arrays = header["arrays"]
    if len(arrays) != 1 or arrays[0].get("name") != "voxels":
        raise InputError("a volume upload holds exactly one array named 'voxels'.")
    entry = arrays[0]
    if entry.get("dtype") not in VOLUME_DTYPES:
        raise InputError(
            f"voxel dtype {entry.get('dtype')!r} is not accepted; use one of {', '.join(VOLUME_DTYPES)}."
        )
    shape = entry.get("shape")
    if (
        not isinstance(shape, list)
        or len(shape) != 3
        or not all(isinstance(s, int) and s >= 1 for s in shape)
    ):
        raise InputError(f"volume shape {shape!r} must be 3 positive sizes [k, j, i].")
    voxels = int(np.prod(shape, dtype=np.int64))
    if voxels > max_voxels:
        raise TooLargeError(
            f"a volume of {voxels} voxels {shape} is over this server's limit of {max_voxels}."
        )
    m = np.asarray(header.get("meta", {}).get("ijk_to_ras"), dtype=np.float64)
    if m.shape != (4, 4) or not np.all(np.isfinite(m)):
        raise InputError("volume geometry ijk_to_ras must be a finite 4x4 matrix.")
    spacing = np.linalg.norm(m[:3, :3], axis=0)
    lo, hi = SPACING_RANGE_MM
    if np.any(spacing < lo) or np.any(spacing > hi) or abs(np.linalg.det(m[:3, :3])) < 1e-9:
        raise InputError(
            f"voxel spacing {np.round(spacing, 4).tolist()} mm is outside {lo}..{hi} mm or degenerate."
        )


class VolumeStore:
    def __init__(self, folder: Path, max_bytes: int, max_voxels: int, memory_volumes: int = 4) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.max_voxels = max_voxels
        self.memory_volumes = memory_volumes
        self._memory: OrderedDict[str, Volume] = OrderedDict()
        self._lock = threading.Lock()
        self.uploads = 0  # volumes this process stored (tests: a second upload is skipped)

    def path(self, sha: str) -> Path:
        return self.folder / sha[:2] / f"{check_sha(sha)}.vfm"

    def has(self, sha: str) -> bool:
        p = self.path(sha)
        if not p.is_file():
            return False
        _touch(p)
        return True

    def size(self, sha: str) -> int:
        return self.path(sha).stat().st_size

    def put(self, sha: str, body: bytes) -> Volume:
        """Validate an uploaded frame, check it holds the content its address names, store it atomically."""
        path = self.path(sha)
        header, _ = frame_header(body)
        check_volume_header(header, self.max_voxels)
        volume = self._decode(body)
        if volume.array.dtype.kind == "f" and not np.all(np.isfinite(volume.array)):
            raise InputError("the volume holds NaN or infinite voxels; CT voxels must be finite numbers.")
        actual = volume.content_hash()
        if actual != sha:
            raise InputError(
                f"the uploaded volume's content hash is {actual}, not its address {sha}; re-upload it."
            )
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda tmp: tmp.write_bytes(body), suffix=".vfm")
            self.uploads += 1
        self._remember(sha, volume)
        self.evict(keep=sha)
        return volume

    def get(self, sha: str) -> Volume:
        """The stored volume (KeyError when absent)."""
        with self._lock:
            if sha in self._memory:
                self._memory.move_to_end(sha)
                _touch(self.path(sha))
                return self._memory[sha]
        path = self.path(sha)
        try:
            body = path.read_bytes()
        except FileNotFoundError:
            raise KeyError(sha) from None
        _touch(path)
        volume = self._decode(body)
        self._remember(sha, volume)
        return volume

    def _decode(self, body: bytes) -> Volume:
        return volume_from_frame(decode_frame(body))

    def _remember(self, sha: str, volume: Volume) -> None:
        with self._lock:
            self._memory[sha] = volume
            self._memory.move_to_end(sha)
            while len(self._memory) > self.memory_volumes:
                self._memory.popitem(last=False)

    def evict(self, keep: str | None = None) -> int:
        """Remove least recently used entries until the store fits its budget; returns how many."""
        removed = evict_least_recent(
            self.folder.glob("*/*.vfm"), self.max_bytes, lambda p, _: p.stem == keep, "volume store"
        )
        with self._lock:
            for p in removed:
                self._memory.pop(p.stem, None)
        return len(removed)


def _touch(path: Path) -> None:
    try:
        os.utime(path)
    except OSError:
        pass
