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

from ..errors import InputError
from ..features.identity import check_backbone, recorded_backbone
from ..features.service import FeaturePipeline
from ..features.spec import ModelSpec
from ..features.volume_features import VolumeFeatures
from ..imaging.volume import Volume
from ..progress import CancelFlag, ProgressFn, check_cancel, no_progress
from .pooling import pool_all
from .probe import Probe


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
        from ..imaging.io import read_volume

        for n, src in enumerate(images):
            check_cancel(cancel)
            name = src.name if isinstance(src, Volume) else Path(str(src)).name
            progress(n / len(images), f"features {n + 1}/{len(images)}: {name}")
            volume = src if isinstance(src, Volume) else read_volume(src)

            def sub(f: float, m: str, n: int = n) -> None:
                progress((n + f) / len(images), m)

            yield self.volume_features(volume, spec, preprocess, sub, cancel)
        progress(1.0, "features ready")

    def spec_for(self, probe: Probe) -> ModelSpec:
        """Our model, else the probe's own backbone."""
        return self.spec.for_record(probe)

    def apply(
        self,
        probe: Probe,
        images: Sequence[str | Path | Volume],
        progress: ProgressFn | None = None,
        cancel: CancelFlag | None = None,
    ) -> np.ndarray:
        """Probe outputs for images (paths or Volumes), after checking the model matches the probe."""
        from ..features.extract import model_identity

        spec = self.spec_for(probe)
        check_probe_backbone(probe, model_identity(self.service.backbone(spec)))
        preprocess = self.preprocess_for(spec, probe.preprocess)
        return probe.predict_inputs(
            self.pooled_inputs(images, probe.pooling, preprocess, progress, cancel, spec)
        )
