"""Jobs: long work queued per device, with progress, cancel, per-key limits and abandonment.

One worker thread per device runs its queue one job at a time, so a device is never oversubscribed. A job
nobody has polled for ``abandon_after_s`` is cancelled (its client went away); a finished job's result is
kept for ``keep_results_s``. With ``records`` (the server's ``DATA/jobs``), every job's status and result
are also written to the shared folder, so any process sharing it answers polls, result fetches and cancels
for any job, counts a key's jobs across processes and keeps abandonment working (job_records.py).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import CancelledError, VoxelFMError
from .job_records import PROGRESS_EVERY_S, JobRecords

log = logging.getLogger(__name__)

ACTIVE = ("queued", "running")
Runner = Callable[["Job", str], bytes]  # (job, device) -> the result frame; reads job.progress / job.cancel


class TooManyJobsError(VoxelFMError):
    """A key already has its maximum of queued and running jobs (HTTP 429)."""


@dataclass
class Job:
    kind: str
    owner: str
    request: Any
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    state: str = "queued"  # queued, running, done, failed, cancelled
    fraction: float = 0.0
    message: str = "queued"
    error: str | None = None
    error_kind: str | None = None  # "input" (the request's fault) or "internal"
    device: str = ""
    result: bytes | None = None
    seen: float = field(default_factory=time.monotonic)  # last poll
    started: float | None = None
    ended: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    ended_event: threading.Event = field(default_factory=threading.Event)  # set once the job has ended
    started_wall: float | None = None  # time.time() at the start (the feature cache keeps what it uses)
    ended_wall: float | None = None  # time.time() at the end (shared records: other processes read it)
    on_change: Callable[[Job, bool], None] | None = None  # (job, state changed): writes the shared record
    _written: float = 0.0

    def progress(self, fraction: float, message: str) -> None:
        self.fraction, self.message = float(max(0.0, min(1.0, fraction))), message
        if self.on_change is not None and time.monotonic() - self._written > PROGRESS_EVERY_S:
            self._written = time.monotonic()
            self.on_change(self, False)

    def finish(self, state: str, error: str | None = None, kind: str | None = None) -> None:
        self.state, self.error, self.error_kind, self.ended = state, error, kind, time.monotonic()
        self.ended_wall = time.time()
        if state == "done":
            self.fraction, self.message = 1.0, "done"
        else:
            self.message = state
        if self.on_change is not None:
            self.on_change(self, True)
        self.ended_event.set()

    @property
    def seconds(self) -> float:
        """Time the job has run (compute on the device, without queueing and transfer)."""
        if self.started is None:
            return 0.0
        return (self.ended if self.ended is not None else time.monotonic()) - self.started

    def wait(self, seconds: float) -> None:
        """Return when the job ends or after ``seconds`` (a long poll: no polling delay on the result)."""
        if seconds > 0:
            self.ended_event.wait(seconds)

    def record(self) -> dict[str, Any]:
        """The job's status as every process reports it (the shared record, the HTTP reply)."""
        return {
            "id": self.id,
            "kind": self.kind,
            "owner": self.owner,
            "state": self.state,
            "progress": self.fraction,
            "message": self.message,
            "device": self.device,
            "seconds": self.seconds,
            "error": self.error if self.state in ("failed", "cancelled") else None,
            "error_kind": self.error_kind,
            "started_wall": self.started_wall,
            "ended_wall": self.ended_wall,
        }


class JobManager:
    def __init__(
        self,
        devices: list[str],
        runner: Runner,
        max_queued_per_key: int = 4,
        abandon_after_s: float = 60.0,
        keep_results_s: float = 600.0,
        records: JobRecords | None = None,
    ) -> None:
        self.runner = runner
        self.records = records
        self.max_queued_per_key = max_queued_per_key
        self.abandon_after_s = abandon_after_s
        self.keep_results_s = keep_results_s
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._queues = {d: queue.Queue() for d in devices}
        self._threads = [
            threading.Thread(target=self._work, args=(d, q), name=f"voxelfm-jobs-{d}", daemon=True)
            for d, q in self._queues.items()
        ]
        self._threads.append(threading.Thread(target=self._reap, name="voxelfm-jobs-reaper", daemon=True))
        for t in self._threads:
            t.start()

    # ---- API

    def submit(self, owner: str, kind: str, request: Any) -> Job:
        lock = self.records.submit_lock() if self.records else contextlib.nullcontext()
        with lock, self._lock:
            if self.records:
                active = self.records.active_of(owner)
            else:
                active = sum(1 for j in self._jobs.values() if j.owner == owner and j.state in ACTIVE)
            if active >= self.max_queued_per_key:
                raise TooManyJobsError(
                    f"this API key already has {active} jobs queued or running (limit {self.max_queued_per_key}); "
                    "wait for one to finish."
                )
            job = Job(kind, owner, request, on_change=self._write if self.records else None)
            device = min(self._queues, key=lambda d: self._queues[d].qsize())
            job.device = device
            self._jobs[job.id] = job
            if self.records:
                self.records.write(job.record())
        self._queues[device].put(job)
        return job

    def get(self, owner: str, job_id: str) -> Job:
        """A job of this process (KeyError if unknown or another key's); counts as a poll."""
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None or job.owner != owner:
            raise KeyError(job_id)
        job.seen = time.monotonic()
        return job

    def status(self, owner: str, job_id: str, wait: float = 0.0) -> dict[str, Any]:
        """The job's status, from this process or the shared records (KeyError if unknown or another key's).
        With ``wait``, returns as soon as the job ends or after ``wait`` seconds. Counts as a poll."""
        try:
            job = self.get(owner, job_id)
        except KeyError:
            return self._shared_status(owner, job_id, wait)
        if self.records:
            self.records.seen(job_id)
        job.wait(wait)
        return job.record()

    def result(self, owner: str, job_id: str) -> bytes | None:
        """The result frame of a done job (None while it is not done)."""
        record = self.status(owner, job_id)
        if record["state"] != "done":
            return None
        with self._lock:
            job = self._jobs.get(job_id)
        if job is not None and job.result is not None:
            return job.result
        return self.records.read_result(job_id) if self.records else None

    def cancel(self, owner: str, job_id: str, why: str = "cancelled by the client") -> dict[str, Any]:
        try:
            job = self.get(owner, job_id)
        except KeyError:  # another process runs it: leave a cancel request its reaper picks up
            record = self._shared_status(owner, job_id, 0.0)
            if record["state"] in ACTIVE:
                self.records.request_cancel(job_id, why)  # type: ignore[union-attr]
            return record
        self._cancel(job, why)
        return job.record()

    def running_since(self) -> float | None:
        """Wall time the oldest running job started, in this process or any sharing the records (None: none)."""
        with self._lock:
            starts = [j.started_wall for j in self._jobs.values() if j.state == "running" and j.started_wall]
        if self.records:
            starts += self.records.running_starts()
        return min(starts) if starts else None

    def queued(self, device: str) -> int:
        """Jobs waiting in ``device``'s queue."""
        return self._queues[device].qsize()

    def active(self) -> int:
        with self._lock:
            return sum(1 for j in self._jobs.values() if j.state in ACTIVE)

    def shutdown(self) -> None:
        self._stop.set()
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            self._cancel(job, "the server is shutting down")
        for q in self._queues.values():
            q.put(None)

    # ---- internals

    def _shared_status(self, owner: str, job_id: str, wait: float) -> dict[str, Any]:
        if self.records is None:
            raise KeyError(job_id)
        record = self.records.read(job_id)
        if record is None or record.get("owner") != owner:
            raise KeyError(job_id)
        self.records.seen(job_id)
        end = time.monotonic() + wait
        while record["state"] in ACTIVE and time.monotonic() < end:  # a long poll on another's job
            time.sleep(min(0.1, max(0.0, end - time.monotonic())))
            record = self.records.read(job_id) or record
        return record

    def _write(self, job: Job, changed: bool) -> None:
        """Write the job's record; one writer at a time, each writing the state as it is then, so a progress
        write can never land over a later state."""
        try:
            with self._write_lock:
                if job.state == "done" and job.result is not None:
                    self.records.write_result(job.id, job.result)  # type: ignore[union-attr]
                self.records.write(job.record())  # type: ignore[union-attr]
        except OSError:  # a full or unreachable shared folder: this process still answers for its job
            log.exception("could not write the record of job %s", job.id)

    def _cancel(self, job: Job, why: str) -> None:
        job.cancel.set()
        if job.state == "queued":
            job.finish("cancelled", why)  # the worker skips it
        elif job.state == "running":
            job.error = why  # the runner stops at its next cancel check

    def _work(self, device: str, q: queue.Queue) -> None:
        while not self._stop.is_set():
            job = q.get()
            if job is None:
                return
            if job.state != "queued":
                continue
            job.state, job.message, job.started = "running", "starting", time.monotonic()
            job.started_wall = time.time()
            if job.on_change is not None:
                job.on_change(job, True)
            try:
                result = self.runner(job, device)
            except CancelledError:
                job.finish("cancelled", job.error or "cancelled")
            except VoxelFMError as exc:
                job.finish("failed", str(exc), "input")
            except Exception as exc:  # a bug or an environment failure: report it, keep the worker alive
                log.exception("job %s (%s) failed", job.id, job.kind)
                job.finish("failed", f"{type(exc).__name__}: {exc}", "internal")
            else:
                if job.cancel.is_set():
                    job.finish("cancelled", job.error or "cancelled")
                else:
                    job.result = result
                    job.finish("done")

    def _reap(self) -> None:
        sweep_at = 0.0
        while not self._stop.wait(0.2):
            now = time.monotonic()
            with self._lock:
                jobs = list(self._jobs.values())
            for job in jobs:
                idle = now - job.seen
                if self.records and job.state in ACTIVE:
                    idle = min(
                        idle, time.time() - self.records.last_seen(job.id)
                    )  # polls via other processes
                    self.records.heartbeat(job.id)
                    why = self.records.cancel_requested(job.id)
                    if why is not None:
                        self._cancel(job, why)
                        continue
                if job.state in ACTIVE and idle > self.abandon_after_s:
                    log.info("job %s abandoned (no poll for %.0f s): cancelled", job.id, idle)
                    self._cancel(job, f"abandoned: its client did not poll for {self.abandon_after_s:g} s")
                elif job.ended is not None and now - job.ended > self.keep_results_s:
                    with self._lock:
                        self._jobs.pop(job.id, None)
            if self.records and now > sweep_at:  # finished records of every process, after their TTL
                sweep_at = now + 5.0
                self.records.sweep(self.keep_results_s)
