"""Capabilities through a server, with the same inputs and results as the local pipelines.

``remote_features`` returns the VolumeFeatures ``FeaturePipeline.volume_features`` would; ``remote_segment_fit``
and ``remote_segment_apply`` the SegmentationResult of ``SegmentationPipeline.fit`` / ``apply``. Each takes a
RemoteRun (``.run``: the server, model, feature options, progress and cancel) and its own inputs. The server
runs those very pipelines (``voxelfm.server.capabilities``) on its device, with the client's model, precision
and token budget, so results equal a local run on the same device and precision.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..features.volume_features import VolumeFeatures
from ..imaging.volume import Volume
from ..segment.classes import SegmentClass
from ..segment.config import SegmentationConfig
from ..segment.postprocess import PostprocessConfig
from ..segment.probe import SegmentationProbe
from ..segment.request import SegmentationApplyRequest, SegmentationFitRequest
from ..segment.result import SegmentationResult
from .payloads import features_from_frame, probe_files, segmentation_from_frame, sparse_labels
from .run import RemoteRun, run_capability


def remote_features(run: RemoteRun, volume: Volume) -> VolumeFeatures:
    return features_from_frame(run_capability(run, "features", volume, {}))


def remote_segment_fit(
    run: RemoteRun,
    volume: Volume,
    labels: Volume,
    classes: Sequence[SegmentClass] | None,
    config: SegmentationConfig,
) -> SegmentationResult:
    """Fit on the server: only the labelled slices travel; the reply carries the labelmap and the probe."""
    request = SegmentationFitRequest(
        volume, labels, config, segment_classes=None if classes is None else list(classes)
    )
    fit = {"labels": sparse_labels(labels), **request.settings()}
    return segmentation_from_frame(run_capability(run, "segment-fit", volume, {"fit": fit}))


def remote_segment_apply(
    run: RemoteRun, volume: Volume, probe: SegmentationProbe, postprocess: PostprocessConfig | None = None
) -> SegmentationResult:
    """Apply a saved probe on the server: the probe's files travel with the request (no server paths)."""
    apply = {"probe": probe_files(probe), **SegmentationApplyRequest(volume, probe, postprocess).settings()}
    return segmentation_from_frame(run_capability(run, "segment-apply", volume, {"apply": apply}), probe)
