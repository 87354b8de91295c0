"""Atomic file writes: write a temporary file in the destination folder, then os.replace.

A crash or kill mid-write leaves the previous file intact (never a half-written one under the real name).
File modes are the same for everything we write: a new file gets 0666 minus the umask (0644 under the
usual umask 022), as a plain ``open()`` would; a replaced file keeps its own mode, so a result the user made
private (0600) stays private.
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
        os.chmod(tmp, file_mode(path))  # mkstemp creates 0600
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_group(writes: list[tuple[Path, Callable[[Path], None], str]]) -> list[Path]:
    """Several files that belong together (a probe's weights and header): every ``(path, writer, suffix)``
    writes its temporary file first, and only when all succeeded are they moved over their paths, in order. A
    writer that raises leaves every previous file intact (not new weights beside an old header)."""
    temps: list[Path] = []
    try:
        for path, writer, suffix in writes:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
            os.close(fd)
            temps.append(Path(tmp))
            writer(Path(tmp))
            os.chmod(tmp, file_mode(path))
        for (path, _, _), tmp in zip(writes, temps, strict=True):
            os.replace(tmp, path)
    finally:
        for tmp in temps:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return [Path(path) for path, _, _ in writes]


def file_mode(path: Path) -> int:
    """The mode a write to ``path`` gives the file: the existing file's, else 0666 minus the umask."""
    try:
        return os.stat(path).st_mode & 0o777
    except OSError:
        return 0o666 & ~_umask()


def _umask() -> int:
    """The process umask, read without changing it where the OS allows (os.umask is process-wide, and a
    worker thread creating a file in between would get the wrong mode)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str, fsync: bool = False) -> Path:
    return atomic_write(path, lambda p: p.write_text(text), fsync=fsync)


def atomic_savez(path: Path, **arrays: np.ndarray) -> Path:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez must not append ".npz" to the temp name
            np.savez(f, **arrays)

    return atomic_write(path, write)
