"""The VoxelFM client: run capabilities on a VoxelFM server (`voxelfm serve`) instead of this computer.

Base install only (stdlib HTTP + zstandard); the server itself is the ``[server]`` extra.
"""

from ..lazy import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        ".client": ("VoxelFMClient",),
        ".capabilities": ("remote_features", "remote_segment_apply", "remote_segment_fit"),
        ".errors": (
            "KeyRefusedError",
            "PayloadTooLargeError",
            "ProtocolMismatchError",
            "ServerError",
            "ServerFailedError",
            "ServerRequestError",
            "ServerTimeoutError",
            "ServerUnreachableError",
        ),
        ".run": ("RemoteRun",),
        ".wire": ("PROTOCOL_VERSION",),
    },
)
