"""Segmentation probe files: the shared probe format (voxelfm.files.probe_file) with task "segmentation".

The task's own fields: ``classes`` (value, name, colour, terminology) and ``feature_config`` (the
SegmentationConfig: intensity features, feature spacing, post-processing, ...), so an applied probe behaves
exactly as it was fitted.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import CheckpointError, InputError
from ..features.identity import recorded_backbone
from ..files.probe_file import (
    check_fields,
    check_number,
    read_probe_files,
    recorded_fields,
    write_probe_files,
)
from ..files.probe_paths import probe_paths
from .classes import SegmentClass
from .config import SegmentationConfig
from .probe import SegmentationProbe

TASK = "segmentation"
_ARRAYS = ("patch_weight", "feat_mean", "feat_std", "intensity_coef", "bias")


def save_segmentation_probe(probe: SegmentationProbe, path: str | os.PathLike) -> tuple[Path, Path]:
    """Write NAME.safetensors + NAME.json; returns both paths."""
    tensors = {
        n: np.ascontiguousarray(getattr(probe, n), dtype=np.float32)
        for n in _ARRAYS
        if getattr(probe, n) is not None
    }
    meta = {
        "classes": [c.to_dict() for c in probe.classes],
        "feature_config": probe.config.to_dict(),
        **recorded_fields(probe),
    }
    return write_probe_files(path, TASK, tensors, meta)


def load_segmentation_probe(path: str | os.PathLike) -> SegmentationProbe:
    """Read a segmentation probe (format 2, or a format-1 "voxelfm-segmentation-probe" file)."""
    meta, tensors = read_probe_files(path, (TASK,), as_numpy=True)
    json_path = probe_paths(path)[1]
    check_fields(meta, {"classes": list, "feature_config": dict}, json_path)
    check_number(
        meta["feature_config"],
        "feature_spacing_mm",
        json_path,
        positive=True,
        optional=True,
        prefix="feature_config.",
    )
    if "bias" not in tensors:
        raise CheckpointError(f"{probe_paths(path)[0]} holds no 'bias' tensor; re-create the probe.")
    try:
        classes = [
            SegmentClass.from_dict(c, f"{json_path.name} classes[{n}]") for n, c in enumerate(meta["classes"])
        ]
        config = SegmentationConfig.from_dict(meta["feature_config"])
    except (InputError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{json_path}: {exc}") from exc
    if not classes:
        raise CheckpointError(f"{json_path}: field 'classes' is empty; a probe needs at least one class.")
    return SegmentationProbe(
        classes=classes,
        config=config,
        patch_weight=tensors.get("patch_weight"),
        feat_mean=tensors.get("feat_mean"),
        feat_std=tensors.get("feat_std"),
        intensity_coef=tensors.get("intensity_coef"),
        bias=tensors["bias"],
        backbone=recorded_backbone(meta),
        preprocess=meta.get("preprocessing", {}),
        metrics=meta.get("metrics", {}),
    )
