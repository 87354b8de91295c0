"""What can go wrong between a VoxelFM client and server: one error type, and one clear message, each."""

from __future__ import annotations

from ..errors import VoxelFMError


class ServerError(VoxelFMError):
    """Base of every error of talking to a VoxelFM server."""

    status: int | None = None  # the HTTP status, when the server answered with an error


class ServerUnreachableError(ServerError):
    """Nothing answers at the URL (wrong address, server down, firewall), or it stopped answering mid-job."""


class ServerTimeoutError(ServerError):
    """The server took longer than the client's timeout to answer."""


class KeyRefusedError(ServerError):
    """HTTP 401: the API key is missing or not one the server accepts."""


class PayloadTooLargeError(ServerError):
    """HTTP 413: a volume or request is over the server's size or voxel limit."""


class ProtocolMismatchError(ServerError):
    """Client and server speak different protocol versions; the message says which side to upgrade."""


class ServerRequestError(ServerError):
    """The server refused a request as invalid (4xx), or a job failed on bad input: the server's message."""


class ServerFailedError(ServerError):
    """The server failed (5xx, or a job ended in an internal error)."""
