"""Errors users can act on.

Every message names the problem and what to do about it; the CLI prints the message alone (no traceback)
and exits with a non-zero status.
"""

from __future__ import annotations


class VoxelFMError(Exception):
    """Base class for errors caused by input, configuration or environment (not bugs)."""


class InputError(VoxelFMError, ValueError):
    """An image, label map, manifest or argument is unusable."""


class CheckpointError(VoxelFMError):
    """A checkpoint is missing, corrupt, or does not match the expected architecture."""


class ModelNotAvailableError(VoxelFMError):
    """Weights are neither cached nor downloadable (e.g. offline)."""


class IntegrityError(VoxelFMError):
    """A downloaded or cached file failed its sha256 / size check."""


class CancelledError(VoxelFMError):
    """The user cancelled a long-running operation."""
