"""One writer per case library: an OS file lock on LIBRARY/write.lock, released even when the writer is killed.

WHY an OS lock and not a marker file: a killed `voxelfm index add` must not leave the library locked for ever;
the kernel drops flock/msvcrt locks with the process. The file holds the holder's pid and start time, only to
tell the second writer who has the library.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from ..errors import InputError

LOCK_NAME = "write.lock"


class LibraryLockedError(InputError):
    """Another process is writing to the library."""


def _try_lock(fd: int) -> bool:
    if os.name == "nt":  # pragma: no cover - Windows
        import msvcrt  # platform-specific (Windows / POSIX)

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    import fcntl  # platform-specific (Windows / POSIX)

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def _unlock(fd: int) -> None:
    if os.name == "nt":  # pragma: no cover - Windows
        import msvcrt  # platform-specific (Windows / POSIX)

        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        return
    import fcntl  # platform-specific (Windows / POSIX)

    fcntl.flock(fd, fcntl.LOCK_UN)


class WriterLock:
    """Exclusive, non-blocking: ``acquire()`` raises LibraryLockedError naming the holder."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> WriterLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        if not _try_lock(fd):
            os.close(fd)
            raise LibraryLockedError(
                f"The case library {self.path.parent} is locked: another process is writing to it "
                f"({self.holder()}). Wait for it to finish, then run the command again."
            )
        os.ftruncate(fd, 0)
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(holder).encode())
        self._fd = fd
        return self

    def holder(self) -> str:
        try:
            info = json.loads(self.path.read_text() or "{}")
            return f"pid {info.get('pid')} on {info.get('host')} since {info.get('since')}"
        except (OSError, ValueError):
            return "holder unknown"

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
            _unlock(self._fd)
        finally:
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> WriterLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
