"""Images -> cached backbone features -> pooled probe inputs; probe/backbone compatibility checks.

Shared by the CLI (`fit-probe`, `apply-probe`) and the Slicer logic, so both fit and apply probes the
same way. Only the pooled inputs are kept in memory, not each volume's full patch grid (except for
token poolings, which need the tokens).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CheckpointError, InputError
from ..progress import CancelFlag, ProgressFn, check_cancel, no_progress
from .pooling import is_token_pooling, pool
from .probe import Probe


def preprocess_from_dict(d: dict[str, Any] | None):
    """The PreprocessConfig recorded in a probe (unknown keys ignored, lists back to tuples)."""
    from ..imaging.preprocess import PreprocessConfig

    known = {f.name for f in dataclasses.fields(PreprocessConfig)}
    kw = {k: v for k, v in (d or {}).items() if k in known}
    if isinstance(kw.get("clip_hu"), list):
        kw["clip_hu"] = tuple(kw["clip_hu"])
    return PreprocessConfig(**kw)


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


def pooled_inputs(
    images: Sequence[str | Path | Any],
    model: Any,
    pooling: str,
    preprocess: Any = None,
    max_tokens: int = 8192,
    overlap: int = 2,
    device: str = "auto",
    cache: bool = True,
    progress: ProgressFn | None = None,
    cancel: CancelFlag | None = None,
    precision: str = "auto",
) -> np.ndarray | list[np.ndarray]:
    """Read each image (path or Volume), extract its features (disk-cached) and pool them."""
    from ..features.extract import extract_features
    from ..imaging.io import read_volume
    from ..imaging.volume import Volume

    progress = progress or no_progress
    if len(images) == 0:
        raise InputError("No images given.")
    out = []
    for n, src in enumerate(images):
        check_cancel(cancel)
        name = getattr(src, "name", "") if isinstance(src, Volume) else Path(str(src)).name
        progress(n / len(images), f"features {n + 1}/{len(images)}: {name}")
        volume = src if isinstance(src, Volume) else read_volume(src)

        def sub(f: float, m: str, n: int = n) -> None:
            progress((n + f) / len(images), m)

        feats = extract_features(
            volume,
            model,
            preprocess=preprocess,
            max_tokens=max_tokens,
            overlap=overlap,
            device=device,
            precision=precision,
            progress=sub,
            cancel=cancel,
            cache=cache,
        )
        out.append(pool(feats, pooling))
    progress(1.0, "features ready")
    if is_token_pooling(pooling):
        return out
    dims = sorted({v.shape[0] for v in out})
    if len(dims) > 1:
        raise InputError(f"Feature vectors have different sizes {dims}; all images must use the same model.")
    return np.stack(out)


def apply_probe(probe: Probe, images: Sequence[Any], model: Any, **kwargs: Any) -> np.ndarray:
    """Probe outputs for images (paths or Volumes), after checking the model matches the probe."""
    from ..features.extract import model_identity

    check_backbone(probe, model_identity(model))
    kwargs.setdefault("preprocess", preprocess_from_dict(probe.preprocess) if probe.preprocess else None)
    return probe.predict_inputs(pooled_inputs(images, model, probe.pooling, **kwargs))
