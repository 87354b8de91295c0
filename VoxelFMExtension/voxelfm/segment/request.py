"""What a front end asks of the segmentation pipeline: request types (arrays + geometry + settings).

The CLI, the Slicer logic and the server build these and hand them to ``SegmentationPipeline.run_fit`` /
``run_apply``; everything but the arrays goes to and from plain data (``settings`` / ``from_settings``), so a
request can cross a process boundary as JSON plus its volumes. Label preparation (paint on whole slices,
the classes of the label values) happens here, once, not in each front end: the CLI hands over a label file
as painted, the Slicer logic the label image its segments make (``segment.labels.few_shot_labels``, whose
"slices" workflow is the same ``painted_slices_to_labels``) with the segments' own classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError
from ..imaging.volume import Volume
from .classes import SegmentClass, classes_from_names
from .config import SegmentationConfig
from .labels import UNLABELLED, painted_slices_to_labels
from .postprocess import PostprocessConfig
from .probe import SegmentationProbe


@dataclass
class SegmentationFitRequest:
    """Fit a probe on a volume's painted labels and segment the volume.

    ``labels``: 0 background, 1..254 structures, 255 unlabelled, on any grid aligned with ``volume``;
    ``painted_slices``: 0 also marks unpainted voxels, and only slices holding a structure count (every
    other voxel of such a slice is background); ``class_names``: comma-separated, one per structure in
    label-value order ("" = generic names); ``segment_classes``: the classes of the label values when the front
    end knows more than names (the Slicer logic: each painted segment's name, colour and terminology), used
    instead of ``class_names``; ``warnings``: what preparing the labels found (e.g. voxels painted in two
    segments), said with the result; ``volume_key``: the volume's content hash when the caller knows it (a refit
    does not hash the voxels again; not a setting)."""

    volume: Volume
    labels: Volume
    config: SegmentationConfig = field(default_factory=SegmentationConfig)
    class_names: str = ""
    painted_slices: bool = False
    segment_classes: list[SegmentClass] | None = None
    warnings: list[str] = field(default_factory=list)
    volume_key: str | None = None

    def prepared_labels(self) -> Volume:
        """The labels as the probe is fitted on them (whole painted slices when ``painted_slices``)."""
        if not self.painted_slices:
            return self.labels
        if (self.labels.array == UNLABELLED).any():
            raise InputError(
                "Painted-slice labels (--painted-slices) expect 0 for unpainted voxels, but the label image contains 255."
            )
        array = painted_slices_to_labels(self.labels.array, axis=0)
        return Volume(array, self.labels.ijk_to_ras, self.labels.name)

    def classes(self, labels: Volume) -> list[SegmentClass]:
        """The named classes of the structures ``labels`` holds (empty: generic names). Given classes are
        passed on as they are (the fit names the values present, ``classes_for``): scanning a whole label
        image for its values costs a refit ~0.2 s at 512 x 512 x 275, so only ``class_names`` (named in
        label-value order) pays for it."""
        if self.segment_classes is not None:
            return list(self.segment_classes)
        if not self.class_names:
            return []
        values = [int(v) for v in np.unique(labels.array) if 0 < v < UNLABELLED]
        return classes_from_names(self.class_names, values)

    def settings(self) -> dict[str, Any]:
        classes = self.segment_classes
        return {
            "config": self.config.to_dict(),
            "class_names": self.class_names,
            "painted_slices": self.painted_slices,
            "segment_classes": None if classes is None else [c.to_dict() for c in classes],
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_settings(
        cls, volume: Volume, labels: Volume, settings: dict[str, Any], volume_key: str | None = None
    ) -> SegmentationFitRequest:
        classes = settings.get("segment_classes")
        return cls(
            volume,
            labels,
            SegmentationConfig.from_dict(settings.get("config") or {}),
            str(settings.get("class_names") or ""),
            bool(settings.get("painted_slices", False)),
            None if classes is None else [SegmentClass.from_dict(c, "segment class") for c in classes],
            [str(w) for w in settings.get("warnings") or ()],
            volume_key,
        )


@dataclass
class SegmentationApplyRequest:
    """Segment a volume with a loaded probe; ``postprocess`` replaces the probe's own when given;
    ``volume_key``: the volume's content hash when known (not a setting)."""

    volume: Volume
    probe: SegmentationProbe
    postprocess: PostprocessConfig | None = None
    volume_key: str | None = None

    def settings(self) -> dict[str, Any]:
        return {"postprocess": self.postprocess.to_dict() if self.postprocess is not None else None}

    @classmethod
    def from_settings(
        cls, volume: Volume, probe: SegmentationProbe, settings: dict[str, Any], volume_key: str | None = None
    ) -> SegmentationApplyRequest:
        pp = settings.get("postprocess")
        return cls(volume, probe, PostprocessConfig.from_dict(pp) if pp is not None else None, volume_key)
