"""The ASGI application of `voxelfm serve` (FastAPI): health, the volume store, jobs. OpenAPI at /docs.

Only ``GET /health`` is open; every other endpoint needs ``Authorization: Bearer KEY`` with a key from the
keys file. A client announcing another protocol version (header X-VoxelFM-Protocol) gets HTTP 426 naming the
side to upgrade.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from .. import __version__
from ..client.connection import JOB_HEADER, PROTOCOL_HEADER
from ..client.wire import PROTOCOL_VERSION, volume_frame
from ..device import pick_device
from ..errors import InputError
from .auth import KeyRing
from .cache_budget import CacheSweeper
from .capabilities import CapabilityRunner, describe
from .config import ServerConfig
from .job_records import JobRecords
from .jobs import JobManager, TooManyJobsError
from .libraries import LibraryListing, case_image, library_case, library_listing
from .models import Health, JobRequest, JobStatus, VolumeInfo
from .store import SHA_PATTERN, TooLargeError, VolumeStore

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_WAIT_S = (
    10.0  # longest long poll (?wait=S on a submit, a status or a result; well under any proxy's timeout)
)
Wait = Annotated[float, Query(ge=0.0, le=MAX_WAIT_S)]


def owner(request: Request, authorization: Annotated[str | None, Header()] = None) -> str:
    """The caller's key owner name; HTTP 401 unless the bearer key is one the keys file lists."""
    who = request.app.state.keys.owner(authorization)
    if who is None:
        raise HTTPException(
            401,
            "missing API key" if not authorization else "the API key was refused",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return who


Owner = Annotated[str, Depends(owner)]


def job_status(record: dict[str, Any]) -> JobStatus:
    """The reply for a job's record (``Job.record()``, from this process or the shared folder)."""
    return JobStatus(**{k: record.get(k) for k in JobStatus.model_fields})


def create_app(config: ServerConfig) -> FastAPI:
    keys = KeyRing(config.keys_file)
    store = VolumeStore(config.volumes_dir, config.store_bytes, config.max_voxels, config.memory_volumes)
    devices = [str(pick_device(d)) for d in config.devices]
    state: dict[str, JobManager] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state["jobs"] = JobManager(
            devices,
            CapabilityRunner(store, config.libraries),
            config.max_queued_per_key,
            config.abandon_after_s,
            config.keep_results_s,
            JobRecords(config.jobs_dir),
        )
        sweeper = CacheSweeper(config.features_dir, config.cache_bytes, state["jobs"].running_since)
        yield
        sweeper.stop()
        state["jobs"].shutdown()

    app = FastAPI(
        title="VoxelFM server",
        version=__version__,
        description=f"VoxelFM capabilities over HTTP (protocol {PROTOCOL_VERSION}). Bearer API key on every "
        "endpoint except /health.",
        lifespan=lifespan,
    )
    app.state.store = store
    app.state.keys = keys
    app.state.jobs = state

    @app.middleware("http")
    async def body_limit(request: Request, call_next):
        """Every request body (volumes, job requests with labels or probes) is capped before it is read."""
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > config.max_upload_bytes):
            return JSONResponse(
                {"detail": _too_large(int(length) if length.isdigit() else -1, config.max_upload_bytes)},
                status_code=413,
            )
        if (
            length is None
            and request.method in ("POST", "PUT")
            and "chunked" in request.headers.get("transfer-encoding", "")
        ):
            return JSONResponse(
                {"detail": "send a Content-Length; chunked request bodies are not accepted."}, status_code=411
            )
        return await call_next(request)

    @app.middleware("http")
    async def protocol_check(request: Request, call_next):
        theirs = request.headers.get(PROTOCOL_HEADER)
        if theirs is not None and theirs != str(PROTOCOL_VERSION):
            newer = "this server" if theirs.isdigit() and int(theirs) > PROTOCOL_VERSION else "the client"
            return JSONResponse(
                {
                    "detail": f"the client speaks protocol {theirs}, this server (version {__version__}) protocol "
                    f"{PROTOCOL_VERSION}: upgrade {newer}."
                },
                status_code=426,
            )
        return await call_next(request)

    def jobs() -> JobManager:
        return state["jobs"]

    @app.get("/health", response_model=Health)
    def health() -> Health:
        manager = state.get("jobs")
        return Health(
            version=__version__,
            protocol=PROTOCOL_VERSION,
            devices=devices,
            jobs_active=manager.active() if manager else 0,
            max_upload_bytes=config.max_upload_bytes,
            max_voxels=config.max_voxels,
        )

    @app.head("/volumes/{sha}")
    def has_volume(sha: str, who: Owner) -> Response:
        return Response(status_code=200 if _valid_sha(sha) and store.has(sha) else 404)

    @app.get("/volumes/{sha}", response_model=VolumeInfo)
    def volume_info(sha: str, who: Owner) -> VolumeInfo:
        if not (_valid_sha(sha) and store.has(sha)):
            raise HTTPException(
                404, f"volume {sha} is not on this server; upload it with PUT /volumes/{sha}."
            )
        return VolumeInfo(sha256=sha, stored_bytes=store.size(sha), uploaded=False)

    @app.put("/volumes/{sha}", response_model=VolumeInfo)
    async def put_volume(sha: str, request: Request, who: Owner) -> VolumeInfo:
        if not _valid_sha(sha):
            raise HTTPException(422, f"volume address {sha!r} is not a sha256 hex digest.")
        if store.has(sha):  # someone uploaded it meanwhile: do not read the body into memory
            return VolumeInfo(sha256=sha, stored_bytes=store.size(sha), uploaded=False)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > config.max_upload_bytes:
                raise HTTPException(413, _too_large(size, config.max_upload_bytes))
            chunks.append(chunk)
        try:
            await run_in_threadpool(store.put, sha, b"".join(chunks))
        except TooLargeError as exc:
            raise HTTPException(413, str(exc)) from None
        except InputError as exc:
            raise HTTPException(422, str(exc)) from None
        return VolumeInfo(sha256=sha, stored_bytes=store.size(sha), uploaded=True)

    @app.get("/libraries", response_model=list[str])
    def libraries(who: Owner) -> list[str]:
        """The ids of the case libraries this server offers (its --libraries file)."""
        return sorted(config.libraries)

    @app.get("/libraries/{library_id}", response_model=LibraryListing)
    def library_cases(library_id: str, who: Owner) -> LibraryListing:
        try:
            return library_listing(config.libraries, library_id)
        except InputError as exc:
            raise HTTPException(404, str(exc)) from None

    @app.get(
        "/libraries/{library_id}/cases/{case_id}/volume",
        response_class=Response,
        responses={200: {"content": {"application/octet-stream": {}}, "description": "the volume frame"}},
    )
    def case_volume(library_id: str, case_id: str, who: Owner) -> Response:
        """One case's image as a compressed volume frame (the upload's format), to open a hit of this library:
        read from the case's file here, or from the volume store for a case added as an uploaded volume."""
        try:
            volume = case_image(library_case(config.libraries, library_id, case_id), library_id, store.get)
        except InputError as exc:  # unknown library or case, image gone or unreadable
            raise HTTPException(404, str(exc)) from None
        if volume.array.size > config.max_voxels:
            raise HTTPException(
                413,
                f"case {case_id!r} has {volume.array.size} voxels, over this server's limit of "
                f"{config.max_voxels} (--max-voxels).",
            )
        return Response(volume_frame(volume).encode(), media_type="application/octet-stream")

    @app.post(
        "/jobs",
        response_model=JobStatus,
        status_code=202,
        responses={200: {"content": {"application/octet-stream": {}}, "description": "the result (?wait)"}},
    )
    def submit(body: JobRequest, who: Owner, wait: Wait = 0.0) -> Response:
        """Queue a job. With ``wait``, a job that ends within ``wait`` seconds answers with its result frame
        (HTTP 200, its status in the X-VoxelFM-Job header): a short refit is one round trip."""
        if not store.has(body.volume):
            raise HTTPException(404, f"volume {body.volume} is not on this server; upload it first.")
        try:
            job = jobs().submit(who, body.kind, body)
        except TooManyJobsError as exc:
            raise HTTPException(429, str(exc)) from None
        log.info("job %s queued on %s: %s", job.id, job.device, describe(body))
        return job_reply(jobs(), who, job.id, wait)

    @app.get("/jobs/{job_id}", response_model=JobStatus)
    def status(job_id: str, who: Owner, wait: Wait = 0.0) -> JobStatus:
        """The job's state; with ``wait`` the reply comes as soon as the job ends, or after ``wait`` seconds."""
        return job_status(_job(lambda: jobs().status(who, job_id, wait), job_id))

    @app.delete("/jobs/{job_id}", response_model=JobStatus)
    def cancel(job_id: str, who: Owner) -> JobStatus:
        return job_status(_job(lambda: jobs().cancel(who, job_id), job_id))

    @app.get("/jobs/{job_id}/result", response_class=Response)
    def result(job_id: str, who: Owner, wait: Wait = 0.0) -> Response:
        """The result frame of a done job. With ``wait`` (a long poll), a job not done within ``wait`` seconds
        answers with its status (HTTP 202) instead of 409: polling and fetching are one request."""
        if wait > 0:
            return job_reply(jobs(), who, job_id, wait)
        body = _job(lambda: jobs().result(who, job_id), job_id)
        if body is None:
            state = _job(lambda: jobs().status(who, job_id), job_id)["state"]
            raise HTTPException(409, f"job {job_id} is {state}; fetch its result when it is done.")
        return Response(body, media_type="application/octet-stream")

    return app


def job_reply(manager: JobManager, who: str, job_id: str, wait: float) -> Response:
    """After waiting up to ``wait`` s: a done job's result frame (200, status in the X-VoxelFM-Job header),
    else the job's status (202)."""
    record = _job(lambda: manager.status(who, job_id, wait), job_id)
    status = job_status(record).model_dump()
    if record["state"] == "done":
        body = _job(lambda: manager.result(who, job_id), job_id)
        if body is not None:
            return Response(
                body, media_type="application/octet-stream", headers={JOB_HEADER: json.dumps(status)}
            )
    return JSONResponse(status, status_code=202)


def _valid_sha(sha: str) -> bool:
    return SHA_PATTERN.match(sha) is not None


def _job(call: Callable[[], T], job_id: str) -> T:
    """``call()`` (a JobManager look-up); HTTP 404 for an unknown job or another key's."""
    try:
        return call()
    except KeyError:
        raise HTTPException(
            404, f"no job {job_id} for this key on this server (finished long ago?)."
        ) from None


def _too_large(size: int, limit: int) -> str:
    return f"the request body is {size} bytes, over this server's limit of {limit} bytes (--max-upload-mb)."
