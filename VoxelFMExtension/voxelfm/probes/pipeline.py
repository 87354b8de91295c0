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

from ..errors import CheckpointError, InputError
from ..features.service import FeaturePipeline
from ..features.spec import ModelSpec
from ..features.volume_features import VolumeFeatures
from ..imaging.volume import Volume
from ..progress import CancelFlag, ProgressFn, check_cancel, no_progress
from .pooling import pool_all
from .probe import Probe


def preprocess_from_dict(d: dict[str, Any] | None):
    """The PreprocessConfig recorded in a probe (unknown keys ignored, lists back to tuples)."""
    from ..imaging.preprocess import PreprocessConfig

    # one reading of a record: a probe saved before the orientation option existed used the stored order
    return PreprocessConfig.from_dict(d) if d else PreprocessConfig()


def check_backbone(probe: Probe, model_info: dict[str, Any]) -> None:
    """Refuse to apply a probe to features of a different backbone (weights identified by sha256)."""
    want = probe.backbone or {}
    want_sha, have_sha = want.get("sha256"), (model_info or {}).get("sha256")
    if want_sha and have_sha and want_sha != have_sha:
        raise CheckpointError(
            f"This probe was fitted on features of model {want.get('id')!r} (revision {want.get('revision')}, "
            f"sha256 {want_sha[:12]}...), but model {model_info.get('id')!r} (sha256 {have_sha[:12]}...) is loaded. "
            f"Run with --model {want.get('id')} (the probe's backbone) or refit the probe on this model."
        )
    if not want_sha and want.get("id") and want.get("id") != (model_info or {}).get("id"):
        raise CheckpointError(
            f"This probe was fitted on model {want.get('id')!r} but {model_info.get('id')!r} is loaded; "
            "use the probe's model or refit the probe."
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
        return (
            self.spec
            if self.spec.model
            else self.spec.with_model(str((probe.backbone or {}).get("id") or ""))
        )

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
        check_backbone(probe, model_identity(self.service.backbone(spec)))
        preprocess = preprocess_from_dict(probe.preprocess) if probe.preprocess else None
        return probe.predict_inputs(
            self.pooled_inputs(images, probe.pooling, preprocess, progress, cancel, spec)
        )
