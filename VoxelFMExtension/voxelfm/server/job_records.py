"""Job records on the shared data folder, so any server process answers for any job (no sticky sessions).

Under ``DATA/jobs/``: ``<id>.json`` the job's status (written atomically by the process running it, on every
state change and at most every ``PROGRESS_EVERY_S`` for progress), ``<id>.result`` its result frame,
``<id>.cancel`` a cancel request written by whichever process the client's DELETE reached (the owner's reaper
turns it into its cancel flag), ``<id>.seen`` touched by every poll, wherever it lands (the owner's
abandonment check reads its time). The owner re-touches the records of its active jobs; an active record
not touched for ``STALE_S`` belongs to a process that died, and reads as failed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..files.atomic import atomic_write

ACTIVE = ("queued", "running")
STALE_S = 30.0  # an active record untouched this long: its process is gone
PROGRESS_EVERY_S = 0.5
SUFFIXES = (".json", ".result", ".cancel", ".seen")


class JobRecords:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def _path(self, job_id: str, suffix: str) -> Path:
        if not job_id.isalnum():  # ids are uuid hex: never a path
            raise KeyError(job_id)
        return self.folder / f"{job_id}{suffix}"

    # ---- the owner's side

    def write(self, record: dict[str, Any]) -> None:
        path = self._path(record["id"], ".json")
        atomic_write(path, lambda tmp: tmp.write_text(json.dumps(record)), suffix=".json")

    def write_result(self, job_id: str, result: bytes) -> None:
        atomic_write(self._path(job_id, ".result"), lambda tmp: tmp.write_bytes(result), suffix=".result")

    def heartbeat(self, job_id: str) -> None:
        _touch(self._path(job_id, ".json"))

    def cancel_requested(self, job_id: str) -> str | None:
        """The reason a client gave through any process, or None."""
        try:
            return self._path(job_id, ".cancel").read_text() or "cancelled by the client"
        except FileNotFoundError:
            return None

    def last_seen(self, job_id: str) -> float:
        """Wall time of the last poll through any process (0 when never polled)."""
        try:
            return self._path(job_id, ".seen").stat().st_mtime
        except FileNotFoundError:
            return 0.0

    # ---- any process

    def read(self, job_id: str) -> dict[str, Any] | None:
        path = self._path(job_id, ".json")
        try:
            record = json.loads(path.read_text())
            age = time.time() - path.stat().st_mtime
        except (FileNotFoundError, ValueError):
            return None
        if record.get("state") in ACTIVE and age > STALE_S:
            record.update(
                state="failed",
                message="failed",
                error_kind="internal",
                error="the server process running this job stopped; submit it again.",
            )
        return record

    def read_result(self, job_id: str) -> bytes | None:
        try:
            return self._path(job_id, ".result").read_bytes()
        except FileNotFoundError:
            return None

    def seen(self, job_id: str) -> None:
        path = self._path(job_id, ".seen")
        try:
            os.utime(path)
        except FileNotFoundError:
            path.write_bytes(b"")

    def request_cancel(self, job_id: str, why: str) -> None:
        atomic_write(self._path(job_id, ".cancel"), lambda tmp: tmp.write_text(why))

    def active_of(self, owner: str) -> int:
        """Queued and running jobs of ``owner`` in every process sharing the folder."""
        return sum(1 for r in self._live() if r.get("owner") == owner)

    def running_starts(self) -> list[float]:
        """Start times of the running jobs of every process sharing the folder."""
        return [
            float(r["started_wall"])
            for r in self._live()
            if r["state"] == "running" and r.get("started_wall")
        ]

    def _live(self) -> Iterator[dict[str, Any]]:
        """The active records. WHY the age filter: owners re-touch active records, so only files touched within
        STALE_S are read (a submit does not read every finished record the folder keeps for its TTL)."""
        now = time.time()
        for path in self.folder.glob("*.json"):
            try:
                fresh = not path.name.startswith(".") and now - path.stat().st_mtime <= STALE_S
            except FileNotFoundError:
                continue
            record = self.read(path.stem) if fresh else None
            if record and record.get("state") in ACTIVE:
                yield record

    @contextlib.contextmanager
    def submit_lock(self) -> Iterator[None]:
        """Serialises counting and recording a new job across processes (the per-key limit holds)."""
        with open(self.folder / ".submit.lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def sweep(self, keep_s: float) -> int:
        """Remove the files of jobs that ended (or went stale) more than ``keep_s`` ago; returns how many."""
        now, removed = time.time(), 0
        for path in self.folder.glob("*.json"):
            if path.name.startswith("."):
                continue
            record = self.read(path.stem)
            if record is None:
                continue
            ended = record.get("ended_wall")
            if record["state"] in ACTIVE or (ended is None and record["state"] != "failed"):
                continue
            try:
                last = ended if ended is not None else path.stat().st_mtime
            except FileNotFoundError:
                continue
            if now - last > keep_s:
                for suffix in SUFFIXES:
                    self._path(path.stem, suffix).unlink(missing_ok=True)
                removed += 1
        return removed


def _touch(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.utime(path)
