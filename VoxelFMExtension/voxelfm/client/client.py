"""The one VoxelFM client: upload a volume once (by content hash), submit a job, poll it, fetch its result.

    client = VoxelFMClient("http://gpu-box:8000", key)
    sha = client.ensure_volume(volume)              # hashed once per volume; uploaded only if the server lacks it
    frame = client.run_job({"kind": "features", "volume": sha, ...}, progress, cancel, volumes=[volume])

A job is one request when it ends within the long poll (``POST /jobs?wait``: the reply is its result); longer
jobs are polled with ``GET /jobs/{id}/result?wait``, whose last reply is the result. A volume this client saw
on the server is not asked for again (no HEAD per refit); if the server lost it meanwhile, the submit's 404
makes the client upload it again (``volumes``) and resubmit once.

Used by `voxelfm.client.run` (one capability job), and through it by the remote_* calls of the CLI and the
Slicer logic.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import CancelledError, InputError
from ..imaging.volume import Volume
from ..progress import CancelFlag, ProgressFn, no_progress
from .connection import Connection, Reply
from .errors import (
    PayloadTooLargeError,
    ProtocolMismatchError,
    ServerError,
    ServerFailedError,
    ServerRequestError,
)
from .wire import PROTOCOL_VERSION, Frame, decode_frame, volume_frame

POLL_WAIT_SECONDS = 1.0  # long poll: the server answers when the job ends, else after this (progress updates)


class VoxelFMClient:
    """A client of one server (``url``, bearer ``key``); safe to share between threads."""

    def __init__(self, url: str, key: str | None, timeout: float = 60.0) -> None:
        self.connection = Connection(url, key, timeout)
        self._checked = False
        self.last_job: dict[str, Any] = {}  # the last job's final status (state, seconds on the device, ...)
        self.limits: dict[str, int] = {}  # the server's max_upload_bytes and max_voxels, from /health
        self._hashes: dict[int, tuple[weakref.ref, bytes, str]] = {}
        self._present: set[str] = set()  # volumes seen on the server (cleared when a job or submit fails)
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return self.connection.url

    # ---- connection

    def health(self) -> dict[str, Any]:
        return self.connection.request("GET", "/health").json()

    def check(self) -> dict[str, Any]:
        """The server's health, after checking it speaks our protocol (once per client)."""
        info = self.health()
        theirs = int(info.get("protocol", -1))
        if theirs != PROTOCOL_VERSION:
            side = (
                "this client (update the VoxelFM extension / pip install -U voxelfm)"
                if theirs > PROTOCOL_VERSION
                else "the server"
            )
            raise ProtocolMismatchError(
                f"The VoxelFM server at {self.url} speaks protocol {theirs} (version {info.get('version')}), this "
                f"client protocol {PROTOCOL_VERSION}: upgrade {side}."
            )
        self.limits = {k: int(info[k]) for k in ("max_upload_bytes", "max_voxels") if k in info}
        self._checked = True
        return info

    def _ensure_checked(self) -> None:
        if not self._checked:
            self.check()

    # ---- volumes

    def volume_hash(self, volume: Volume) -> str:
        """``volume.content_hash()``, computed once per volume object (repaint-and-refit never re-hashes it).

        Like the segmentation pipeline's per-volume cache, this assumes the voxels are not edited in place;
        pass a fresh Volume after editing them."""
        key = id(volume.array)
        geometry = np.asarray(volume.ijk_to_ras, dtype=np.float64).tobytes()
        with self._lock:
            known = self._hashes.get(key)
            if known and known[0]() is volume.array and known[1] == geometry:
                return known[2]
        sha = volume.content_hash()
        with self._lock:
            self._hashes = {k: v for k, v in self._hashes.items() if v[0]() is not None}
            self._hashes[key] = (weakref.ref(volume.array), geometry, sha)
        return sha

    def remember_hash(self, volume: Volume, sha: str) -> None:
        """Tell the client ``volume``'s content hash, known from an earlier copy of the same voxels (the Slicer
        logic keys it by node state), so that ``ensure_volume`` does not hash this copy again."""
        geometry = np.asarray(volume.ijk_to_ras, dtype=np.float64).tobytes()
        with self._lock:
            self._hashes = {k: v for k, v in self._hashes.items() if v[0]() is not None}
            self._hashes[id(volume.array)] = (weakref.ref(volume.array), geometry, sha)

    def has_volume(self, sha: str) -> bool:
        return self.connection.request("HEAD", f"/volumes/{sha}").status == 200

    def ensure_volume(self, volume: Volume) -> str:
        """The volume's content hash, uploading it (compressed) only when the server does not hold it."""
        self._ensure_checked()
        sha = self.volume_hash(volume)
        if sha in self._present:
            return sha
        if not self.has_volume(sha):
            voxels, limit = int(volume.array.size), self.limits.get("max_voxels")
            if limit is not None and voxels > limit:
                raise PayloadTooLargeError(
                    f"The volume has {voxels} voxels, over the limit of {limit} of the VoxelFM server at "
                    f"{self.url}; crop or resample it, or ask its administrator to raise --max-voxels."
                )
            body = volume_frame(volume).encode()
            limit = self.limits.get("max_upload_bytes")
            if limit is not None and len(body) > limit:
                raise PayloadTooLargeError(
                    f"The compressed volume is {len(body)} bytes, over the limit of {limit} bytes of the VoxelFM "
                    f"server at {self.url}; ask its administrator to raise --max-upload-mb."
                )
            self.connection.request("PUT", f"/volumes/{sha}", body, "application/octet-stream")
        with self._lock:
            self._present.add(sha)
        return sha

    # ---- jobs

    def submit(self, request: dict[str, Any]) -> dict[str, Any]:
        """Queue a job; its status."""
        return self._post_job(request, 0.0).json()

    def _post_job(self, request: dict[str, Any], wait: float) -> Reply:
        """Queue a job; with ``wait`` the reply is its result frame when it ends within ``wait`` s (``.job``
        holds its status), else its status (``.json()``)."""
        self._ensure_checked()
        return self.connection.request("POST", f"/jobs?wait={wait:g}", json.dumps(request).encode())

    def status(self, job_id: str, wait: float = 0.0) -> dict[str, Any]:
        """The job's state; ``wait`` > 0 lets the server answer as soon as it ends (at most ``wait`` s later)."""
        return self.connection.request("GET", f"/jobs/{job_id}?wait={wait:g}").json()

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self.connection.request("DELETE", f"/jobs/{job_id}").json()

    def _cancel_quietly(self, job_id: str) -> None:
        try:
            self.cancel(job_id)
        except ServerError:  # best effort: an unreachable server abandons the job by itself
            pass

    def result(self, job_id: str) -> Frame:
        return decode_frame(self.connection.request("GET", f"/jobs/{job_id}/result").body)

    def run_job(
        self,
        request: dict[str, Any],
        progress: ProgressFn | None = None,
        cancel: CancelFlag | None = None,
        volumes: Sequence[Volume] = (),
    ) -> Frame:
        """Submit, long-poll until the job ends (cancelling it when ``cancel`` is set), and return its result.
        ``volumes``: the volumes the request names, uploaded again if the server lost one."""
        progress = progress or no_progress
        reply = self._submit_with_volumes(request, volumes)
        job = reply.job or reply.json()
        try:
            while reply.job is None and job["state"] in ("queued", "running"):
                progress(float(job.get("progress", 0.0)), str(job.get("message", "")))
                if cancel is not None and cancel.is_set():
                    self.cancel(job["id"])
                    raise CancelledError("Cancelled by the user (the server job was cancelled too).")
                reply = self.connection.request("GET", f"/jobs/{job['id']}/result?wait={POLL_WAIT_SECONDS:g}")
                job = reply.job or reply.json()
        except KeyboardInterrupt:  # Ctrl-C in the CLI: do not leave the job running until it is abandoned
            self._cancel_quietly(job["id"])
            raise
        self.last_job = job
        if reply.job is not None:
            progress(1.0, "done")
            return decode_frame(reply.body)
        with self._lock:  # a failed job may name a volume the server lost: ask again next time
            self._present.clear()
        error = job.get("error") or f"the job ended as {job['state']}"
        if job["state"] == "cancelled":
            raise CancelledError(f"The server cancelled the job: {error}")
        if job.get("error_kind") == "input":
            raise ServerRequestError(f"The VoxelFM server at {self.url} could not run the job: {error}")
        raise ServerFailedError(f"The job failed on the VoxelFM server at {self.url}: {error}")

    def _submit_with_volumes(self, request: dict[str, Any], volumes: Sequence[Volume]) -> Reply:
        try:
            return self._post_job(request, POLL_WAIT_SECONDS)
        except ServerRequestError as exc:
            if exc.status != 404:
                raise
            with self._lock:
                self._present.clear()
            if not volumes:
                raise
        for volume in volumes:  # evicted since this client saw it: upload again, resubmit once
            self.ensure_volume(volume)
        return self._post_job(request, POLL_WAIT_SECONDS)


def require_server_url(url: str | None) -> str:
    if not url or not url.startswith(("http://", "https://")):
        raise InputError(
            f"Server URL {url!r} must start with http:// or https:// (e.g. http://gpu-box:8000)."
        )
    return url
