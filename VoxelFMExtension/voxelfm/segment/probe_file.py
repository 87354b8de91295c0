"""Segmentation probe files: NAME.safetensors (weights) + NAME.json (classes, colours, backbone, config).

Same layout as classification probes (voxelfm.probes.probe_file) with task "segmentation". The JSON holds the
sha256 of the weights file and is written last, so a probe whose JSON exists is complete and verifiable.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CheckpointError, IntegrityError
from ..files.atomic import atomic_write, atomic_write_text
from ..files.integrity import sha256_of
from ..files.probe_paths import probe_paths
from .api import SegmentationConfig, SegmentationProbe

FORMAT_VERSION = 1
FILE_TYPE = "voxelfm-segmentation-probe"
_ARRAYS = ("patch_weight", "feat_mean", "feat_std", "intensity_coef", "bias")


def save_segmentation_probe(probe: SegmentationProbe, path: str | os.PathLike) -> tuple[Path, Path]:
    from safetensors.numpy import save_file

    st_path, json_path = probe_paths(path)
    tensors = {
        n: np.ascontiguousarray(getattr(probe, n), dtype=np.float32)
        for n in _ARRAYS
        if getattr(probe, n) is not None
    }
    atomic_write(st_path, lambda p: save_file(tensors, str(p), metadata={"type": FILE_TYPE}), ".safetensors")
    meta: dict[str, Any] = {
        "type": FILE_TYPE,
        "format_version": FORMAT_VERSION,
        "task": "segmentation",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "classes": [
            {"value": int(v), "name": n, "color": [round(float(c), 4) for c in col]}
            for v, n, col in zip(probe.class_values, probe.class_names, probe.class_colors, strict=True)
        ],
        "backbone": probe.model,
        "preprocess": probe.preprocess,
        "feature_config": probe.config.to_dict(),
        "metrics": probe.metrics,
        "weights_file": st_path.name,
        "weights_sha256": sha256_of(st_path, memo=False),
    }
    atomic_write_text(json_path, json.dumps(meta, indent=1, default=str))
    return st_path, json_path


def load_segmentation_probe(path: str | os.PathLike) -> SegmentationProbe:
    from safetensors.numpy import load_file

    st_path, json_path = probe_paths(path)
    if not json_path.exists() or not st_path.exists():
        raise CheckpointError(
            f"Segmentation probe not found: need both {json_path.name} and {st_path.name} in {json_path.parent}."
        )
    try:
        meta = json.loads(json_path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{json_path} is not a readable probe description ({exc}).") from exc
    if meta.get("type") != FILE_TYPE:
        raise CheckpointError(f"{json_path} is not a segmentation probe (type {meta.get('type')!r}).")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(
            f"{json_path} uses probe format {meta['format_version']}; update VoxelFM to read it."
        )
    if meta.get("weights_sha256") and sha256_of(st_path, memo=False) != meta["weights_sha256"]:
        raise IntegrityError(
            f"{st_path} does not match the sha256 recorded in {json_path.name}; the file changed."
        )
    t = load_file(str(st_path))
    cls = meta["classes"]
    return SegmentationProbe(
        class_values=[int(c["value"]) for c in cls],
        class_names=[str(c["name"]) for c in cls],
        class_colors=[tuple(float(x) for x in c["color"]) for c in cls],
        config=SegmentationConfig.from_dict(meta.get("feature_config", {})),
        patch_weight=t.get("patch_weight"),
        feat_mean=t.get("feat_mean"),
        feat_std=t.get("feat_std"),
        intensity_coef=t.get("intensity_coef"),
        bias=t["bias"],
        model=meta.get("backbone", {}),
        preprocess=meta.get("preprocess", {}),
        metrics=meta.get("metrics", {}),
    )
