"""Few-shot segmentation glue: painted MRML segments -> labels -> core predictor -> new segments.

Three steps so a GUI can run the slow middle one on a worker thread while MRML (not thread-safe) is
touched only on the main thread:

1. ``prepare(volume_node, segmentation_node, mode)``  main thread: copy voxels + paint into numpy.
2. ``predict(inputs, progress, cancel)``              any thread: call the injected core predictor.
3. ``write(inputs, prediction, output_node)``          main thread: new segments + statistics.

The core is injected (``predictor``), so this module does not depend on how the probe is fitted. A
predictor is called as ``predictor(volume, labels, classes, progress=..., cancel=...)`` and returns either
a uint8 label array [k, j, i] on the volume grid (0 = background, i = classes[i-1]) or an object with
``.labels`` (that array) and optionally ``.probe`` (kept so the GUI can save it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from voxelfm.errors import InputError
from voxelfm.imaging.volume import Volume
from voxelfm.progress import CancelFlag, ProgressFn, check_cancel, no_progress

from .segmentation_nodes import (
    ClassStats,
    FewShotLabels,
    SegmentClass,
    class_statistics,
    labels_from_segmentation,
    write_prediction,
)
from .volume_nodes import node_ijk_to_ras, volume_from_node

Predictor = Callable[..., Any]


@dataclass
class FewShotInputs:
    """Everything the predictor needs, detached from MRML."""

    volume: Volume
    labels: FewShotLabels
    volume_node_id: str
    segmentation_node_id: str


@dataclass
class FewShotPrediction:
    labels: np.ndarray  # uint8 [k, j, i] on the volume grid
    probe: Any = None


@dataclass
class FewShotResult:
    output_node: Any  # vtkMRMLSegmentationNode
    segment_ids: list[str]
    stats: list[ClassStats]
    probe: Any = None
    warnings: list[str] = field(default_factory=list)


def _normalise_prediction(raw: Any, inputs: FewShotInputs) -> FewShotPrediction:
    if isinstance(raw, np.ndarray):
        pred = FewShotPrediction(raw)
    elif hasattr(raw, "labels"):
        pred = FewShotPrediction(np.asarray(raw.labels), getattr(raw, "probe", None))
    else:
        raise TypeError(
            f"predictor returned {type(raw).__name__}; expected an array or an object with .labels"
        )
    expected = inputs.volume.array.shape
    if pred.labels.shape != expected:
        raise InputError(f"Prediction has shape {pred.labels.shape}, expected the volume's {expected}.")
    k = len(inputs.labels.classes)
    if pred.labels.size and int(pred.labels.max()) > k:
        raise InputError(
            f"Prediction contains label {int(pred.labels.max())} but only {k} classes were painted."
        )
    pred.labels = pred.labels.astype(np.uint8, copy=False)
    return pred


class FewShotSegmentLogic:
    """Qt-free driver of the few-shot workflow; the module widget only calls these methods."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor

    def prepare(self, volume_node: Any, segmentation_node: Any, mode: str = "slices") -> FewShotInputs:
        if volume_node is None:
            raise InputError("Select the CT volume to segment.")
        if segmentation_node is None:
            raise InputError("Select the segmentation holding your painted examples.")
        labels = labels_from_segmentation(segmentation_node, volume_node, mode=mode)
        return FewShotInputs(
            volume=volume_from_node(volume_node),
            labels=labels,
            volume_node_id=volume_node.GetID(),
            segmentation_node_id=segmentation_node.GetID(),
        )

    def predict(
        self, inputs: FewShotInputs, progress: ProgressFn | None = None, cancel: CancelFlag | None = None
    ) -> FewShotPrediction:
        progress = progress or no_progress
        check_cancel(cancel)
        raw = self.predictor(
            inputs.volume, inputs.labels.labels, inputs.labels.classes, progress=progress, cancel=cancel
        )
        check_cancel(cancel)
        return _normalise_prediction(raw, inputs)

    def write(
        self,
        inputs: FewShotInputs,
        prediction: FewShotPrediction,
        volume_node: Any,
        output_node: Any = None,
    ) -> FewShotResult:
        if volume_node is None or volume_node.GetID() != inputs.volume_node_id:
            raise InputError("The input volume changed while the prediction ran; run it again.")
        node, ids = write_prediction(prediction.labels, volume_node, inputs.labels.classes, output_node)
        stats = class_statistics(prediction.labels, inputs.volume.ijk_to_ras, inputs.labels.classes)
        return FewShotResult(node, ids, stats, prediction.probe, list(inputs.labels.warnings))

    def run(
        self,
        volume_node: Any,
        segmentation_node: Any,
        mode: str = "slices",
        output_node: Any = None,
        progress: ProgressFn | None = None,
        cancel: CancelFlag | None = None,
    ) -> FewShotResult:
        """All three steps on the calling thread (scripts, tests, headless use)."""
        inputs = self.prepare(volume_node, segmentation_node, mode)
        prediction = self.predict(inputs, progress, cancel)
        return self.write(inputs, prediction, volume_node, output_node)


def apply_labels_to_volume(
    labels: np.ndarray, volume_node: Any, classes: list[SegmentClass], output_node: Any = None
) -> FewShotResult:
    """Write labels from an already-fitted (loaded) probe as segments, with statistics."""
    node, ids = write_prediction(labels, volume_node, classes, output_node)
    stats = class_statistics(labels, node_ijk_to_ras(volume_node), classes)
    return FewShotResult(node, ids, stats)
