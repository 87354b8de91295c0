"""The one HTTP connection to a VoxelFM server: stdlib urllib only, every failure mapped to one ServerError.

WHY urllib: the client is in the base install and in Slicer's Python; loopback and LAN requests need no more
than HTTP/1.1 with a bearer key, so no third-party HTTP client is pulled in.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from .errors import (
    KeyRefusedError,
    PayloadTooLargeError,
    ProtocolMismatchError,
    ServerFailedError,
    ServerRequestError,
    ServerTimeoutError,
    ServerUnreachableError,
)
from .wire import PROTOCOL_VERSION

PROTOCOL_HEADER = "X-VoxelFM-Protocol"
JOB_HEADER = "X-VoxelFM-Job"  # a result frame's job status (JSON), on replies that carry a job's result


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: str
    job: dict[str, Any] | None = None  # the JOB_HEADER of a reply carrying a job's result

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class Transfer:
    """Bytes this connection sent and received (request and reply bodies), for benchmarks and logs."""

    sent: int = 0
    received: int = 0


def _detail(body: bytes) -> str:
    try:
        detail = json.loads(body).get("detail")
    except (ValueError, AttributeError):
        return body[:200].decode("utf-8", "replace")
    if isinstance(detail, list):  # FastAPI's validation errors: where and what
        return "; ".join(f"{'.'.join(str(p) for p in d.get('loc', ()))}: {d.get('msg')}" for d in detail)
    return str(detail)


class Connection:
    """``request(method, path, body)`` against ``url`` with the bearer ``key``; raises a ServerError."""

    def __init__(self, url: str, key: str | None, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.key = key or ""
        self.timeout = timeout
        self.transfer = Transfer()

    def request(
        self, method: str, path: str, body: bytes | None = None, content_type: str = "application/json"
    ) -> Reply:
        headers = {
            PROTOCOL_HEADER: str(PROTOCOL_VERSION),
            "Accept": "application/json, application/octet-stream",
        }
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        if body is not None:
            headers["Content-Type"] = content_type
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
        self.transfer.sent += len(body or b"")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                data = resp.read()
                self.transfer.received += len(data)
                job = resp.headers.get(JOB_HEADER)
                return Reply(
                    resp.status, data, resp.headers.get("Content-Type", ""), json.loads(job) if job else None
                )
        except urllib.error.HTTPError as exc:
            data = exc.read() or b""
            self.transfer.received += len(data)
            if method == "HEAD" and exc.code == 404:
                return Reply(404, b"", "")
            error = self._http_error(exc.code, data)
            error.status = exc.code
            raise error from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, (socket.timeout, TimeoutError)):
                raise self._timeout() from None
            raise ServerUnreachableError(
                f"The VoxelFM server at {self.url} cannot be reached ({exc.reason}); check the URL (--server or "
                "VOXELFM_SERVER) and that the server is running."
            ) from None
        except TimeoutError:
            raise self._timeout() from None
        except (ConnectionError, OSError) as exc:  # reset or closed mid-reply: the server went away
            raise ServerUnreachableError(
                f"The VoxelFM server at {self.url} stopped answering ({exc}); nothing was written. Check that "
                "it is running and retry."
            ) from None

    def _timeout(self) -> ServerTimeoutError:
        return ServerTimeoutError(
            f"The VoxelFM server at {self.url} did not answer within {self.timeout:g} s; it may be overloaded "
            "or the network slow. Retry later."
        )

    def _http_error(self, code: int, body: bytes) -> Exception:
        detail = _detail(body)
        if code == 401:
            why = f" ({detail})" if detail else ""
            return KeyRefusedError(
                f"The VoxelFM server at {self.url} refused the API key{why}; set VOXELFM_API_KEY to a key "
                "the server's keys file lists."
            )
        if code == 413:
            return PayloadTooLargeError(
                f"The VoxelFM server at {self.url} refused a request as too large: {detail}"
            )
        if code == 426:
            return ProtocolMismatchError(detail)
        if code >= 500:
            return ServerFailedError(f"The VoxelFM server at {self.url} failed (HTTP {code}): {detail}")
        return ServerRequestError(
            f"The VoxelFM server at {self.url} refused the request (HTTP {code}): {detail}"
        )
