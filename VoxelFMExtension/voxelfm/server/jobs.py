"""Jobs: long work queued per device, with progress, cancel, per-key limits and abandonment.

One worker thread per device runs its queue one job at a time, so a device is never oversubscribed. A job
nobody has polled for ``abandon_after_s`` is cancelled (its client went away); a finished job's result is
kept until fetched or for ``keep_results_s``. Jobs live in this process: a client polls the process that
accepted its job (see docs/DEPLOYMENT.md on load balancers).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import CancelledError, VoxelFMError

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

    def progress(self, fraction: float, message: str) -> None:
        self.fraction, self.message = float(max(0.0, min(1.0, fraction))), message

    def finish(self, state: str, error: str | None = None, kind: str | None = None) -> None:
        self.state, self.error, self.error_kind, self.ended = state, error, kind, time.monotonic()
        if state == "done":
            self.fraction, self.message = 1.0, "done"
        else:
            self.message = state
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


class JobManager:
    def __init__(
        self,
        devices: list[str],
        runner: Runner,
        max_queued_per_key: int = 4,
        abandon_after_s: float = 60.0,
        keep_results_s: float = 600.0,
    ) -> None:
        self.runner = runner
        self.max_queued_per_key = max_queued_per_key
        self.abandon_after_s = abandon_after_s
        self.keep_results_s = keep_results_s
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
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
        with self._lock:
            active = sum(1 for j in self._jobs.values() if j.owner == owner and j.state in ACTIVE)
            if active >= self.max_queued_per_key:
                raise TooManyJobsError(
                    f"this API key already has {active} jobs queued or running (limit {self.max_queued_per_key}); "
                    "wait for one to finish."
                )
            job = Job(kind, owner, request)
            device = min(self._queues, key=lambda d: self._queues[d].qsize())
            job.device = device
            self._jobs[job.id] = job
        self._queues[device].put(job)
        return job

    def get(self, owner: str, job_id: str) -> Job:
        """The job (KeyError if unknown or another key's); counts as a poll."""
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None or job.owner != owner:
            raise KeyError(job_id)
        job.seen = time.monotonic()
        return job

    def cancel(self, owner: str, job_id: str, why: str = "cancelled by the client") -> Job:
        job = self.get(owner, job_id)
        self._cancel(job, why)
        return job

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
        while not self._stop.wait(0.5):
            now = time.monotonic()
            with self._lock:
                jobs = list(self._jobs.values())
            for job in jobs:
                if job.state in ACTIVE and now - job.seen > self.abandon_after_s:
                    log.info("job %s abandoned (no poll for %.0f s): cancelled", job.id, now - job.seen)
                    self._cancel(job, f"abandoned: its client did not poll for {self.abandon_after_s:g} s")
                elif job.ended is not None and now - job.ended > self.keep_results_s:
                    with self._lock:
                        self._jobs.pop(job.id, None)
