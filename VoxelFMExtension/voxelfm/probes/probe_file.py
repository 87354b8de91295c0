"""Classification, regression and survival probes on disk (the shared format of ``voxelfm.files.probe_file``).

Beside the shared header the JSON records the kind, targets, class names, pooling, head spec, training
configuration and output columns, so a probe is only ever applied to features of the model and
preprocessing it was fitted on. Head weights are stored as ``head.*`` tensors, regression target scaling
as ``target.mean`` / ``target.std``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError
from ..features.identity import recorded_backbone
from ..files.probe_file import (
    check_choice,
    check_fields,
    read_probe_files,
    read_probe_header,
    recorded_fields,
    write_probe_files,
)
from ..files.probe_paths import probe_paths
from .heads import HEAD_TYPES, build_head
from .pooling import POOLINGS
from .probe import Probe
from .train import TrainedHead

TASKS = ("classification", "regression", "survival")
# Fields of this probe family (beside the shared header) that loading needs.
_FIELDS: dict[str, type] = {"kind": str, "targets": list, "pooling": str, "head": dict}
KINDS = {
    "classification": ("binary", "multiclass", "multilabel"),
    "regression": ("regression",),
    "survival": ("survival",),
}


def _check_values(meta: dict[str, Any], where: Path) -> None:
    """The fields loading relies on, by value: an unknown kind/pooling/head must not fall back to a default."""
    check_fields(meta, _FIELDS, where)
    check_choice(meta, "kind", KINDS[meta["task"]], where)
    check_choice(meta, "pooling", POOLINGS, where)
    check_choice(meta["head"], "type", HEAD_TYPES, where, prefix="head.")
    if not meta["targets"] or not all(isinstance(t, str) for t in meta["targets"]):
        raise CheckpointError(f"{where}: field 'targets' must be a non-empty list of column names.")
    names = meta.get("class_names")
    if meta["kind"] == "multiclass" or (meta["kind"] == "binary" and names is not None):
        if not isinstance(names, list) or len(names) < 2 or not all(isinstance(n, str) for n in names):
            raise CheckpointError(f"{where}: field 'class_names' must be a list of at least two names.")


def probe_metadata(probe: Probe) -> dict[str, Any]:
    """The task-specific JSON fields (the shared header is added by ``write_probe_files``)."""
    return {
        "kind": probe.kind,
        "targets": probe.target_names,
        "class_names": probe.class_names,
        "pooling": probe.pooling,
        "head": probe.trained.spec,
        **recorded_fields(probe),
        "training": probe.training,
        "outputs": probe.output_columns(),
    }


def save_probe(probe: Probe, path: str | os.PathLike) -> tuple[Path, Path]:
    """Write NAME.safetensors + NAME.json atomically; returns both paths."""
    tensors: dict[str, torch.Tensor | np.ndarray] = {
        f"head.{k}": v for k, v in probe.trained.head.state_dict().items()
    }
    if probe.trained.target_mean is not None:
        tensors["target.mean"] = np.asarray(probe.trained.target_mean, np.float64)
        tensors["target.std"] = np.asarray(probe.trained.target_std, np.float64)
    return write_probe_files(path, probe.task, tensors, probe_metadata(probe))


def read_probe_json(path: str | os.PathLike) -> dict[str, Any]:
    """The validated JSON of a classification/regression/survival probe (weights not read)."""
    meta = read_probe_header(path, TASKS)
    _check_values(meta, probe_paths(path)[1])
    return meta


def load_probe(path: str | os.PathLike) -> Probe:
    """Load a probe saved by ``save_probe`` (or format 1); checks the weights against the JSON's sha256."""
    st_path, json_path = probe_paths(path)
    meta, tensors = read_probe_files(path, TASKS)
    _check_values(meta, json_path)
    head = _head(meta["head"], tensors, st_path, json_path)
    t_mean = tensors["target.mean"].numpy() if "target.mean" in tensors else None
    t_std = tensors["target.std"].numpy() if "target.std" in tensors else None
    return Probe(
        task=meta["task"],
        kind=meta["kind"],
        target_names=list(meta["targets"]),
        pooling=meta["pooling"],
        trained=TrainedHead(head, meta["head"], t_mean, t_std),
        class_names=meta.get("class_names"),
        backbone=recorded_backbone(meta),
        preprocess=meta.get("preprocessing") or {},
        metrics=meta.get("metrics") or {},
        training=meta.get("training") or {},
    )


def _head(
    spec: dict[str, Any], tensors: dict[str, torch.Tensor], st_path: Path, json_path: Path
) -> torch.nn.Module:
    try:
        head = build_head(spec)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{json_path}: field 'head' is not a usable head spec ({exc}).") from exc
    state = {k[len("head.") :]: v for k, v in tensors.items() if k.startswith("head.")}
    try:
        head.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"Probe weights {st_path} do not fit the head in {json_path.name}: {exc}"
        ) from exc
    return head.eval()
