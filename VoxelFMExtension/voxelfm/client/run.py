"""Where and how a capability runs on a server, and the one request shape every capability job shares.

Every ``remote_*`` function takes a RemoteRun plus its capability's own inputs. Torch-free (the Slicer logic's
server link builds RemoteRuns before the PyTorch extension is installed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..features.spec import FeatureOptions, ModelSpec
from ..imaging.volume import Volume
from ..progress import CancelFlag, ProgressFn
from .client import VoxelFMClient
from .wire import Frame


@dataclass(frozen=True)
class RemoteRun:
    """The server (``client``), the model and feature options it computes with, and the caller's progress
    callback and cancel flag (a set flag cancels the server job)."""

    client: VoxelFMClient
    spec: ModelSpec
    options: FeatureOptions
    progress: ProgressFn | None = None
    cancel: CancelFlag | None = None


def model_request(spec: ModelSpec, options: FeatureOptions) -> dict[str, Any]:
    """What of a ModelSpec and FeatureOptions travels (the device is the server's own)."""
    return {
        "model": {"model": spec.model, "precision": spec.precision, "max_tokens": int(spec.max_tokens)},
        "features": {
            "crop_background": bool(options.crop_background),
            "max_patches": options.max_patches,
            "overlap": int(options.overlap),
            "cache": bool(options.cache),
        },
    }


def run_capability(
    run: RemoteRun, kind: str, volume: Volume, payload: dict[str, Any], others: Sequence[Volume] = ()
) -> Frame:
    """One capability job on the server and its result frame: ``volume`` uploaded once (by content hash), the
    model and feature options, and ``payload``, the kind's own part. ``others``: the further volumes the payload
    names (already uploaded), sent again with ``volume`` if the server lost them."""
    request = {
        "kind": kind,
        "volume": run.client.ensure_volume(volume),
        **model_request(run.spec, run.options),
        **payload,
    }
    return run.client.run_job(request, run.progress, run.cancel, [volume, *others])
