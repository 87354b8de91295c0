"""The real few-shot predictor: VoxelFM features + the core's segmentation probe (voxelfm.segment).

``CorePredictor`` plugs into ``FewShotSegmentLogic`` (it is called with the volume, the few-shot label
image and the classes). Features come from the disk cache after the first run and the per-volume
``SegmentationContext`` is kept, so an auto-refit while the user paints only redoes sampling, the
small fit and one interpolation pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from voxelfm.imaging.volume import Volume
from voxelfm.progress import CancelFlag, ProgressFn, check_cancel, no_progress

from .features_logic import FeaturesLogic
from .segmentation_nodes import SegmentClass


@dataclass
class CorePrediction:
    labels: np.ndarray  # uint8 [k, j, i] on the volume grid, values 0..K
    probe: Any  # voxelfm.segment.api.SegmentationProbe
    warnings: list[str] = field(default_factory=list)


def classes_from_probe(probe: Any) -> list[SegmentClass]:
    """Segment classes (names, colours) stored in a fitted or loaded probe, in label-value order."""
    return [
        SegmentClass(name=name, color=tuple(float(c) for c in color))
        for name, color in zip(probe.class_names, probe.class_colors, strict=True)
    ]


class CorePredictor:
    """Callable predictor for FewShotSegmentLogic: the core's FewShotPredictor fed by the features panel."""

    def __init__(
        self, features: FeaturesLogic, model_reference: str, device: str = "auto", config: Any = None
    ):
        from voxelfm.segment.predictor import FewShotPredictor

        self.features = features
        self.model_reference = model_reference
        self.device = device
        self._core = FewShotPredictor(
            model=None,
            config=config,
            device=device,
            features_fn=lambda volume, progress, cancel: features.extract(
                volume, model_reference, device, progress, cancel
            ),
        )

    def __call__(
        self,
        volume: Volume,
        labels: np.ndarray,
        classes: list[SegmentClass],
        progress: ProgressFn | None = None,
        cancel: CancelFlag | None = None,
    ) -> CorePrediction:
        out = self._core(volume, labels, classes, progress, cancel)
        warnings = list(out.result.warnings) + list(out.probe.metrics.get("warnings", []))
        return CorePrediction(np.asarray(out.labels, dtype=np.uint8), out.probe, warnings)

    def apply(
        self, volume: Volume, probe: Any, progress: ProgressFn | None = None, cancel: CancelFlag | None = None
    ) -> np.ndarray:
        """Labels of ``volume`` from an existing probe (e.g. loaded from a file), values = probe classes."""
        progress = progress or no_progress
        ctx = self._core.context_for(volume, progress, cancel)
        check_cancel(cancel)
        progress(0.85, "Predicting")
        result = probe.predict(volume, ctx.features, context=ctx, with_probabilities=False)
        progress(1.0, "Done")
        labelmap = np.asarray(result.labelmap)
        # map stored label values onto 1..K in class order (a loaded probe may use any values 1..254)
        lut = np.zeros(256, dtype=np.uint8)
        for index, value in enumerate(probe.class_values, start=1):
            lut[int(value)] = index
        return lut[labelmap.astype(np.uint8)]


def save_probe(probe: Any, path: str) -> str:
    from voxelfm.segment.probe_file import save_segmentation_probe

    weights, meta = save_segmentation_probe(probe, path)
    return str(meta)


def load_probe(path: str) -> Any:
    from voxelfm.segment.probe_file import load_segmentation_probe

    return load_segmentation_probe(path)
