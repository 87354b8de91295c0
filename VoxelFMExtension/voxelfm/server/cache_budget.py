"""The server's feature cache kept within a byte budget: least recently used entries removed first.

The cache (``DATA/features``, shared by every server process on the folder) touches an entry's mtime on
every hit and writes new entries whole, so mtime is the time of last use. An entry used since the oldest
running job started (in any process sharing the folder: ``in_use_since``) is never removed, even over the
budget: that job may still need it. A removed entry is only a miss: the features are recomputed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

SWEEP_EVERY_S = 2.0


def evict_least_recent(files, max_bytes: int, spare: Callable[[Path, float], bool], what: str) -> list[Path]:
    """Remove the least recently used of ``files`` (by modification time: a use touches the file) until they fit
    ``max_bytes``, skipping those ``spare(path, mtime)`` keeps; returns the removed paths. The one LRU rule of the
    volume store and the feature cache, safe beside other processes sharing the folder."""
    entries = []
    for p in files:
        if p.name.startswith("."):  # another writer's temporary file
            continue
        try:
            st = p.stat()
        except FileNotFoundError:  # another process removed it
            continue
        entries.append((st.st_mtime_ns, st.st_size, p))
    total = sum(e[1] for e in entries)
    removed = []
    for mtime_ns, size, p in sorted(entries):
        if total <= max_bytes:
            break
        if spare(p, mtime_ns / 1e9):
            continue
        p.unlink(missing_ok=True)
        total -= size
        removed.append(p)
        log.info("%s over budget: removed %s (%d bytes)", what, p.name, size)
    return removed


def sweep_cache(folder: Path, max_bytes: int, in_use_since: float | None) -> int:
    """Remove least recently used ``*.npz`` entries of ``folder`` until it fits ``max_bytes``; returns how
    many. Entries used at or after ``in_use_since`` (wall time; None: no job running) are kept."""

    def in_use(_: Path, mtime: float) -> bool:
        return in_use_since is not None and mtime >= in_use_since

    return len(evict_least_recent(Path(folder).glob("*.npz"), max_bytes, in_use, "feature cache"))


class CacheSweeper:
    """A thread that keeps ``folder`` within ``max_bytes`` (checked every ``SWEEP_EVERY_S``)."""

    def __init__(self, folder: Path, max_bytes: int, in_use_since: Callable[[], float | None]) -> None:
        self.folder, self.max_bytes, self.in_use_since = Path(folder), max_bytes, in_use_since
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="voxelfm-cache-budget", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(SWEEP_EVERY_S):
            try:
                sweep_cache(self.folder, self.max_bytes, self.in_use_since())
            except OSError:
                log.exception("feature cache sweep failed")

    def stop(self) -> None:
        self._stop.set()
