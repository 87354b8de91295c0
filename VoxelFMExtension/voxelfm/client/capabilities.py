"""Capabilities through a server, with the same inputs and results as the local pipelines.

``remote_features`` returns the VolumeFeatures ``FeaturePipeline.volume_features`` would; ``remote_segment_fit``
and ``remote_segment_apply`` the SegmentationResult of ``SegmentationPipeline.fit`` / ``apply``. The server
runs those very pipelines (``voxelfm.server.capabilities``) on its device, with the client's model, precision
and token budget, so results equal a local run on the same device and precision.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..features.spec import FeatureOptions, ModelSpec
from ..features.volume_features import VolumeFeatures
from ..imaging.volume import Volume
from ..progress import CancelFlag, ProgressFn
from ..segment.classes import SegmentClass
from ..segment.config import SegmentationConfig
from ..segment.postprocess import PostprocessConfig
from ..segment.probe import SegmentationProbe
from ..segment.request import SegmentationApplyRequest, SegmentationFitRequest
from ..segment.result import SegmentationResult
from .client import VoxelFMClient
from .payloads import features_from_frame, probe_files, segmentation_from_frame, sparse_labels
from .wire import Frame


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
    client: VoxelFMClient,
    kind: str,
    volume: Volume,
    spec: ModelSpec,
    options: FeatureOptions,
    payload: dict[str, Any],
    progress: ProgressFn | None = None,
    cancel: CancelFlag | None = None,
    others: Sequence[Volume] = (),
) -> Frame:
    """One capability job on the server and its result frame: ``volume`` uploaded once (by content hash), the
    model and feature options, and ``payload``, the kind's own part. ``others``: the further volumes the payload
    names (already uploaded), sent again with ``volume`` if the server lost them."""
    request = {
        "kind": kind,
        "volume": client.ensure_volume(volume),
        **model_request(spec, options),
        **payload,
    }
    return client.run_job(request, progress, cancel, [volume, *others])


def remote_features(
    client: VoxelFMClient,
    volume: Volume,
    spec: ModelSpec,
    options: FeatureOptions,
    progress: ProgressFn | None = None,
    cancel: CancelFlag | None = None,
) -> VolumeFeatures:
    return features_from_frame(
        run_capability(client, "features", volume, spec, options, {}, progress, cancel)
    )


def remote_segment_fit(
    client: VoxelFMClient,
    volume: Volume,
    labels: Volume,
    classes: Sequence[SegmentClass] | None,
    config: SegmentationConfig,
    spec: ModelSpec,
    options: FeatureOptions,
    progress: ProgressFn | None = None,
    cancel: CancelFlag | None = None,
) -> SegmentationResult:
    """Fit on the server: only the labelled slices travel; the reply carries the labelmap and the probe."""
    request = SegmentationFitRequest(
        volume, labels, config, segment_classes=None if classes is None else list(classes)
    )
    fit = {"labels": sparse_labels(labels), **request.settings()}
    frame = run_capability(client, "segment-fit", volume, spec, options, {"fit": fit}, progress, cancel)
    return segmentation_from_frame(frame)


def remote_segment_apply(
    client: VoxelFMClient,
    volume: Volume,
    probe: SegmentationProbe,
    spec: ModelSpec,
    options: FeatureOptions,
    postprocess: PostprocessConfig | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFlag | None = None,
) -> SegmentationResult:
    """Apply a saved probe on the server: the probe's files travel with the request (no server paths)."""
    apply = {"probe": probe_files(probe), **SegmentationApplyRequest(volume, probe, postprocess).settings()}
    frame = run_capability(client, "segment-apply", volume, spec, options, {"apply": apply}, progress, cancel)
    return segmentation_from_frame(frame, probe)
