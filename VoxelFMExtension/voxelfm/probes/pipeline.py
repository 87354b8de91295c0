"""Images -> cached backbone features -> pooled probe inputs; probe/backbone compatibility checks.

Shared by the CLI (`fit-probe`, `apply-probe`) and the Slicer logic, so both fit and apply probes the
same way. Only the pooled inputs are kept in memory, not each volume's full patch grid (except for
token poolings, which need the tokens).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, VoxelFMError
from ..features.extract import model_identity
from ..features.identity import backbone_record, check_backbone, recorded_backbone
from ..features.service import FeaturePipeline
from ..features.spec import ModelSpec
from ..features.volume_features import VolumeFeatures
from ..imaging.io import read_volume
from ..imaging.volume import Volume
from ..progress import CancelFlag, ProgressFn, check_cancel, no_progress
from .config import ProbeConfig
from .fit import FitResult, fit_probe_inputs
from .manifest import Manifest
from .pooling import pool_all
from .probe import Probe
from .targets import encode_targets


def check_probe_backbone(probe: Any, loaded: dict[str, Any]) -> None:
    """Refuse to apply a probe (or a report-model run) to features of other backbone weights."""
    recorded = recorded_backbone(probe)
    check_backbone(
        recorded,
        loaded,
        "This probe was fitted on features of model",
        f"run with --model {recorded.get('id')} (the probe's backbone) or refit the probe on this model.",
    )


class ProbePipeline(FeaturePipeline):
    """``ProbePipeline(spec, options, service)``: pooled features of many images, to fit a probe or apply one.

    Features come from the shared service (disk-cached) like every other capability's; a probe is applied with
    its own recorded preprocessing, and with its own backbone when no model is named.
    """

    def pooled_inputs(
        self,
        images: Sequence[str | Path | Volume],
        pooling: str,
        preprocess: Any = None,
        progress: ProgressFn | None = None,
        cancel: CancelFlag | None = None,
        spec: ModelSpec | None = None,
    ) -> np.ndarray | list[np.ndarray]:
        """Read each image (path or Volume), extract its features and pool them (one volume in memory at a time)."""
        if len(images) == 0:
            raise InputError("No images given.")
        return pool_all(self._features(images, spec, preprocess, progress or no_progress, cancel), pooling)

    def _features(
        self,
        images: Sequence[str | Path | Volume],
        spec: ModelSpec | None,
        preprocess: Any,
        progress: ProgressFn,
        cancel: CancelFlag | None,
    ) -> Iterator[VolumeFeatures]:
        for n, src in enumerate(images):
            check_cancel(cancel)
            name = src.name if isinstance(src, Volume) else Path(str(src)).name
            progress(n / len(images), f"features {n + 1}/{len(images)}: {name}")
            volume = src if isinstance(src, Volume) else read_volume(src)

            def sub(f: float, m: str, n: int = n) -> None:
                progress((n + f) / len(images), m)

            yield self.volume_features(volume, spec, preprocess, sub, cancel)
        progress(1.0, "features ready")

    def fit(
        self,
        task: str,
        manifest: Manifest,
        config: ProbeConfig,
        *,
        cancel: CancelFlag | None = None,
        progress: ProgressFn = no_progress,
    ) -> FitResult:
        """Features of the manifest's images -> a probe fitted (and cross-validated) on them, recording our
        backbone, its preprocessing and the extraction settings; bad targets fail before any extraction."""
        encode_targets(task, manifest.targets, manifest.target_names)
        backbone = backbone_record(model_identity(self.service.backbone(self.spec)))
        preprocess = self.model_preprocess(self.spec)
        inputs = self.pooled_inputs(manifest.images, config.pooling, preprocess, progress, cancel)
        result = fit_probe_inputs(
            task,
            inputs,
            manifest.targets,
            config,
            target_names=manifest.target_names,
            folds=manifest.folds,
            split=manifest.split,
            groups=manifest.groups,
            backbone=backbone,
            preprocess=preprocess.to_dict(),
            cancel=cancel,
        )
        result.probe.training["feature_extraction"] = {
            "max_tokens": self.spec.max_tokens,
            "overlap": self.options.overlap,
        }
        return result

    def spec_for(self, probe: Probe) -> ModelSpec:
        """Our model, else the probe's own backbone."""
        return self.spec.for_record(probe)

    def probe_backbone(self, probe: Probe) -> dict[str, Any]:
        """The identity of the model a probe is applied with (loaded now), saying which failed to load when
        it is the probe's own; a probe of other weights is refused (``check_probe_backbone``)."""
        spec = self.spec_for(probe)
        try:
            model = self.service.backbone(spec)
        except VoxelFMError as exc:
            if self.spec.model:
                raise
            raise type(exc)(
                f"Cannot load the probe's backbone {spec.model!r} ({exc}). Pass --model with that checkpoint."
            ) from exc
        identity = model_identity(model)
        check_probe_backbone(probe, identity)
        return identity

    def apply(
        self,
        probe: Probe,
        images: Sequence[str | Path | Volume],
        progress: ProgressFn | None = None,
        cancel: CancelFlag | None = None,
    ) -> np.ndarray:
        """Probe outputs for images (paths or Volumes), after checking the model matches the probe."""
        self.probe_backbone(probe)
        spec = self.spec_for(probe)
        preprocess = self.preprocess_for(spec, probe.preprocess)
        return probe.predict_inputs(
            self.pooled_inputs(images, probe.pooling, preprocess, progress, cancel, spec)
        )
