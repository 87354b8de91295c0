"""Few-shot segmentation end to end, the one implementation behind `voxelfm segment` and the Slicer logic.

    pipeline = SegmentationPipeline(ModelSpec("voxelfm-tiny"), SegmentationConfig(feature_spacing_mm=1.5))
    result = pipeline.fit(volume, labels, classes)       # features (cached) -> probe -> labelmap on volume's grid
    save_segmentation_probe(result.probe, "liver")
    again = pipeline.apply(other_volume, load_segmentation_probe("liver"))

The pipeline owns everything that must agree between fitting and applying: the model (a probe is applied with
the backbone it was fitted on unless another is named), the feature spacing and preprocessing recorded in the
probe, class identity and post-processing. It keeps the per-volume caches of the last volume, so repainting
and fitting again (interactive refit) only redoes sampling, the small fit and one interpolation pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..features.service import ConfiguredPipeline
from ..features.spec import ModelSpec
from ..imaging.resample import resample_isotropic
from ..imaging.volume import Volume
from ..progress import CancelFlag, ProgressFn, check_cancel, no_progress
from .classes import SegmentClass
from .config import SegmentationConfig
from .context import SegmentationContext
from .fit import fit_segmentation
from .postprocess import PostprocessConfig
from .probe import SegmentationProbe
from .request import SegmentationApplyRequest, SegmentationFitRequest
from .result import SegmentationResult

FEATURES_SHARE = 0.8  # progress fraction spent on features when they are not cached


class SegmentationPipeline(ConfiguredPipeline[SegmentationConfig]):
    """``SegmentationPipeline(spec, config, options, service)``; every argument optional."""

    config_type = SegmentationConfig
    _key: tuple[Any, ...] | None = None  # the volume and settings ``_context`` was built for
    _context: SegmentationContext | None = None

    # ---- features

    def context(
        self,
        volume: Volume,
        feature_spacing_mm: float | None,
        spec: ModelSpec | None = None,
        recorded_preprocess: dict[str, Any] | None = None,
        progress: ProgressFn | None = None,
        cancel: CancelFlag | None = None,
        volume_key: str | None = None,
    ) -> SegmentationContext:
        """Features of ``volume`` (extracted at ``feature_spacing_mm`` when set) and the per-volume caches."""
        progress = progress or no_progress
        spec = spec or self.spec
        key = (volume_key or volume.content_hash(), feature_spacing_mm, spec, repr(recorded_preprocess))
        if self._context is None or key != self._key:
            check_cancel(cancel)
            source = resample_isotropic(volume, feature_spacing_mm) if feature_spacing_mm else volume
            preprocess = self.preprocess_for(spec, recorded_preprocess)
            feats = self.volume_features(
                source, spec, preprocess, lambda f, m: progress(FEATURES_SHARE * f, m), cancel
            )
            self._context, self._key = SegmentationContext(volume, feats), key
        return self._context

    def release(self) -> None:
        """Drop the per-volume caches (the backbone stays with the feature service)."""
        self._context = self._key = None

    # ---- fit and apply

    def fit(
        self,
        volume: Volume,
        labels: Volume,
        classes: Sequence[SegmentClass] | None = None,
        progress: ProgressFn | None = None,
        cancel: CancelFlag | None = None,
        volume_key: str | None = None,
        extra_warnings: Sequence[str] = (),
        config: SegmentationConfig | None = None,
    ) -> SegmentationResult:
        """Fit a probe on sparse ``labels`` (any grid aligned with ``volume``) and segment the whole volume
        (with ``config``, else the pipeline's)."""
        progress = progress or no_progress
        cfg = config or self.config
        ctx = (
            self.context(
                volume, cfg.feature_spacing_mm, progress=progress, cancel=cancel, volume_key=volume_key
            )
            if cfg.use_patch_features
            else SegmentationContext(volume, None)
        )
        check_cancel(cancel)
        progress(0.85, "fitting the segmentation probe")
        probe = fit_segmentation(volume, ctx.features, labels, cfg, classes, context=ctx)
        check_cancel(cancel)
        return self._predict(
            volume, probe, ctx, None, progress, [*extra_warnings, *probe.metrics["warnings"]]
        )

    def run_fit(self, request: SegmentationFitRequest, *args: Any, **kwargs: Any) -> SegmentationResult:
        """A fit request (the form every front end hands over): its labels prepared, its classes named, then
        ``fit`` with the request's settings and label warnings (``args`` / ``kwargs``: ``fit``'s progress,
        cancel, volume_key; a volume key, given or the request's, lets a refit reuse the features)."""
        labels = request.prepared_labels()
        kwargs["volume_key"] = kwargs.get("volume_key") or request.volume_key
        classes = request.classes(labels)
        return self.fit(
            request.volume,
            labels,
            classes,
            *args,
            extra_warnings=request.warnings,
            config=request.config,
            **kwargs,
        )

    def run_apply(self, request: SegmentationApplyRequest, *args: Any, **kwargs: Any) -> SegmentationResult:
        """An apply request: ``apply`` with its volume, probe and post-processing (``args`` / ``kwargs``:
        ``apply``'s progress, cancel, volume_key; without one, the request's)."""
        kwargs["volume_key"] = kwargs.get("volume_key") or request.volume_key
        return self.apply(request.volume, request.probe, *args, postprocess=request.postprocess, **kwargs)

    def apply(
        self,
        volume: Volume,
        probe: SegmentationProbe,
        progress: ProgressFn | None = None,
        cancel: CancelFlag | None = None,
        postprocess: PostprocessConfig | None = None,
        volume_key: str | None = None,
    ) -> SegmentationResult:
        """Segment ``volume`` with a saved probe: its model (unless the pipeline names one), its feature spacing,
        its preprocessing and its post-processing (unless ``postprocess`` overrides it)."""
        progress = progress or no_progress
        ctx = SegmentationContext(volume, None)
        if probe.patch_weight is not None:
            spec = self.spec.for_record(probe)
            ctx = self.context(
                volume,
                probe.config.feature_spacing_mm,
                spec,
                probe.preprocess or None,
                progress,
                cancel,
                volume_key,
            )
        check_cancel(cancel)
        return self._predict(volume, probe, ctx, postprocess, progress, [])

    def _predict(
        self,
        volume: Volume,
        probe: SegmentationProbe,
        ctx: SegmentationContext,
        postprocess: PostprocessConfig | None,
        progress: ProgressFn,
        warnings: list[str],
    ) -> SegmentationResult:
        progress(0.92, "predicting")
        result = probe.predict(
            volume, ctx.features, context=ctx, with_probabilities=False, postprocess=postprocess
        )
        result.warnings = [*warnings, *result.warnings]
        progress(1.0, "done")
        return result
