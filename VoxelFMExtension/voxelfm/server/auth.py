"""API keys: a file of accepted keys, one per line, compared in constant time, re-read when it changes.

Key rotation: add the new key to the file, move clients over, remove the old key; every server process picks
the change up within ``RELOAD_SECONDS`` without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from pathlib import Path

from ..errors import InputError

RELOAD_SECONDS = 1.0


def read_keys(path: Path) -> list[bytes]:
    """Keys of a keys file: one per line, blank lines and ``#`` comments ignored; InputError if none."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise InputError(
            f"Cannot read the keys file {path} ({exc}); it must list API keys, one per line."
        ) from exc
    keys = [s.strip().encode() for s in lines if s.strip() and not s.strip().startswith("#")]
    if not keys:
        raise InputError(f"The keys file {path} holds no key; write at least one API key, one per line.")
    return keys


def key_owner(key: bytes) -> str:
    """A short, non-reversible name for a key (job ownership, logs): never the key itself."""
    return hashlib.sha256(key).hexdigest()[:12]


class KeyRing:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._keys = read_keys(self.path)
        self._stamp = self._file_stamp()
        self._checked = time.monotonic()
        self._lock = threading.Lock()

    def _file_stamp(self) -> tuple[int, int]:
        st = self.path.stat()
        return st.st_mtime_ns, st.st_size

    def _reload_if_changed(self) -> None:
        now = time.monotonic()
        if now - self._checked < RELOAD_SECONDS:
            return
        with self._lock:
            self._checked = now
            try:
                stamp = self._file_stamp()
                if stamp != self._stamp:
                    self._keys, self._stamp = read_keys(self.path), stamp
            except (OSError, InputError):
                pass  # a file being rewritten (or emptied by mistake): keep the keys we had

    def owner(self, authorization: str | None) -> str | None:
        """The key's owner name when ``Authorization: Bearer KEY`` holds an accepted key, else None."""
        self._reload_if_changed()
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        given = token.strip().encode()
        match = False
        for key in self._keys:  # no early exit: the time taken does not tell which key came close
            match |= hmac.compare_digest(given, key)
        return key_owner(given) if match else None
