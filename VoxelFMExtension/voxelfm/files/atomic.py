"""Atomic file writes: write a temporary file in the destination folder, then os.replace.

A crash or kill mid-write leaves the previous file intact (never a half-written one under the real name).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np


def atomic_write(path: Path, writer: Callable[[Path], None], suffix: str = "", fsync: bool = False) -> Path:
    """Call writer(tmp_path) then move tmp_path over path. ``suffix`` keeps extension-sensitive writers happy;
    ``fsync`` flushes the data to disk before the rename (checkpoints: survive a power cut, not only a kill)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    try:
        writer(Path(tmp))
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str, fsync: bool = False) -> Path:
    return atomic_write(path, lambda p: p.write_text(text), fsync=fsync)


def atomic_savez(path: Path, **arrays: np.ndarray) -> Path:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez must not append ".npz" to the temp name
            np.savez(f, **arrays)

    return atomic_write(path, write)
