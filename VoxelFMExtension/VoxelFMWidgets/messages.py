"""What the user reads when something fails."""

from __future__ import annotations


def userMessage(exc: BaseException) -> str:
    """One line for the user: our errors carry their own advice; others get their type (trace in the log)."""
    from voxelfm.errors import VoxelFMError

    return str(exc) if isinstance(exc, VoxelFMError) else f"{type(exc).__name__}: {exc}"
