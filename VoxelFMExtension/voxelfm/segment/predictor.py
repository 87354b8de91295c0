"""A ready-made few-shot predictor for the Slicer logic (VoxelFMLib.segment_logic.FewShotSegmentLogic).

Called as ``predictor(volume, labels, classes, progress=..., cancel=...)`` with labels on the volume grid
(0 / 1..K / 255) and ``classes`` carrying ``.name`` and ``.color``. It keeps the features and the per-volume
caches of the last volume, so repainting and re-running is an interactive refit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..imaging.volume import Volume
from ..progress import CancelFlag, ProgressFn, check_cancel, no_progress
from .api import (
    SegmentationConfig,
    SegmentationContext,
    SegmentationProbe,
    SegmentationResult,
    fit_segmentation,
)


@dataclass
class FewShotOutput:
    labels: np.ndarray  # uint8 [k,j,i], 0 = background, i = classes[i-1]
    probe: SegmentationProbe
    result: SegmentationResult


class FewShotPredictor:
    """``features_fn(volume, progress, cancel)`` replaces the built-in extraction (e.g. the Slicer logic's
    model/feature panel); otherwise features come from ``extract_features`` with ``model``."""

    def __init__(
        self,
        model: Any,
        config: SegmentationConfig | None = None,
        preprocess: Any = None,
        feature_spacing_mm: float | None = None,
        max_tokens: int = 8192,
        device: str = "auto",
        features_fn: Callable[[Volume, ProgressFn, CancelFlag | None], Any] | None = None,
    ) -> None:
        self.model = model
        self.features_fn = features_fn
        self.config = config or SegmentationConfig()
        self.preprocess = preprocess
        self.feature_spacing_mm = feature_spacing_mm
        self.max_tokens = max_tokens
        self.device = device
        self._key: str | None = None
        self._context: SegmentationContext | None = None

    def context_for(
        self, volume: Volume, progress: ProgressFn, cancel: CancelFlag | None
    ) -> SegmentationContext:
        key = volume.content_hash()
        if self._context is None or key != self._key:
            from ..features.extract import extract_features
            from .io_helpers import resample_for_features

            src = (
                resample_for_features(volume, self.feature_spacing_mm) if self.feature_spacing_mm else volume
            )
            if self.features_fn is not None:
                feats = self.features_fn(src, lambda f, m: progress(0.8 * f, m), cancel)
            else:
                feats = extract_features(
                    src,
                    self.model,
                    preprocess=self.preprocess,
                    max_tokens=self.max_tokens,
                    device=self.device,
                    progress=lambda f, m: progress(0.8 * f, m),
                    cancel=cancel,
                )
            self._context, self._key = SegmentationContext(volume, feats), key
        return self._context

    def __call__(
        self,
        volume: Volume,
        labels: np.ndarray,
        classes: list[Any],
        progress: ProgressFn | None = None,
        cancel: CancelFlag | None = None,
    ) -> FewShotOutput:
        progress = progress or no_progress
        ctx = self.context_for(volume, progress, cancel)
        check_cancel(cancel)
        progress(0.85, "fitting the segmentation probe")
        names = {n: getattr(c, "name", f"structure_{n}") for n, c in enumerate(classes, start=1)}
        colors = {n: tuple(getattr(c, "color", (1.0, 0.0, 0.0))) for n, c in enumerate(classes, start=1)}
        probe = fit_segmentation(
            volume, ctx.features, Volume(labels, volume.ijk_to_ras), self.config, names, colors, context=ctx
        )
        probe.config.feature_spacing_mm = self.feature_spacing_mm
        check_cancel(cancel)
        progress(0.92, "predicting")
        result = probe.predict(volume, ctx.features, context=ctx, with_probabilities=False)
        progress(1.0, "done")
        return FewShotOutput(result.labelmap, probe, result)
