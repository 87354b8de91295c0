"""Probe files: NAME.safetensors (weights) + NAME.json (everything else), written atomically.

The JSON records the task, targets, class names, backbone id/revision/sha256, pooling, preprocessing,
metrics (with 95% CIs) and the training configuration, so a probe is only ever applied to features
of the model and preprocessing it was fitted on. The JSON stores the sha256 of the weights file and
is written last: a probe whose JSON exists is complete.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, IntegrityError
from ..files.integrity import sha256_of
from ..files.probe_paths import probe_paths
from .heads import build_head
from .probe import Probe
from .train import TrainedHead

FORMAT_VERSION = 1
FILE_TYPE = "voxelfm-probe"


def _tmp_in(directory: Path, suffix: str) -> Path:
    fd, name = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=suffix)
    os.close(fd)
    return Path(name)


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def probe_metadata(probe: Probe) -> dict[str, Any]:
    import voxelfm

    return {
        "type": FILE_TYPE,
        "format_version": FORMAT_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "voxelfm_version": voxelfm.__version__,
        "task": probe.task,
        "kind": probe.kind,
        "targets": probe.target_names,
        "class_names": probe.class_names,
        "pooling": probe.pooling,
        "head": probe.trained.spec,
        "backbone": probe.backbone,
        "preprocessing": probe.preprocess,
        "metrics": probe.metrics,
        "training": probe.training,
        "outputs": probe.output_columns(),
    }


def save_probe(probe: Probe, path: str | os.PathLike) -> tuple[Path, Path]:
    """Write NAME.safetensors + NAME.json atomically; returns both paths."""
    from safetensors.torch import save_file

    st_path, json_path = probe_paths(path)
    st_path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"head.{k}": v.detach().cpu().contiguous() for k, v in probe.trained.head.state_dict().items()}
    if probe.trained.target_mean is not None:
        tensors["target.mean"] = torch.from_numpy(np.asarray(probe.trained.target_mean, np.float64))
        tensors["target.std"] = torch.from_numpy(np.asarray(probe.trained.target_std, np.float64))
    tmp_st = _tmp_in(st_path.parent, ".safetensors")
    tmp_json = _tmp_in(st_path.parent, ".json")
    try:
        save_file(tensors, str(tmp_st), metadata={"type": FILE_TYPE, "format_version": str(FORMAT_VERSION)})
        meta = probe_metadata(probe)
        meta["weights"] = {"file": st_path.name, "sha256": sha256_of(tmp_st, memo=False)}
        tmp_json.write_text(json.dumps(_json_safe(meta), indent=2, allow_nan=False) + "\n")
        os.replace(tmp_st, st_path)
        os.replace(tmp_json, json_path)
    finally:
        for t in (tmp_st, tmp_json):
            t.unlink(missing_ok=True)
    return st_path, json_path


def read_probe_json(path: str | os.PathLike) -> dict[str, Any]:
    _, json_path = probe_paths(path)
    if not json_path.is_file():
        raise CheckpointError(
            f"Probe file {json_path} not found; pass the probe's NAME, NAME.json or NAME.safetensors."
        )
    try:
        meta = json.loads(json_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"Probe file {json_path} is not valid JSON ({exc}); re-create the probe."
        ) from exc
    if meta.get("type") != FILE_TYPE:
        raise CheckpointError(f"{json_path} is not a VoxelFM probe (type={meta.get('type')!r}).")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(
            f"{json_path} has probe format {meta['format_version']}, newer than this VoxelFM reads "
            f"({FORMAT_VERSION}); update the extension."
        )
    return meta


def load_probe(path: str | os.PathLike) -> Probe:
    """Load a probe saved by ``save_probe``; checks the weights against the JSON's sha256."""
    from safetensors.torch import load_file

    st_path, json_path = probe_paths(path)
    meta = read_probe_json(path)
    if not st_path.is_file():
        raise CheckpointError(f"Probe weights {st_path} are missing (the JSON {json_path.name} is there).")
    expected = (meta.get("weights") or {}).get("sha256")
    if expected and sha256_of(st_path, memo=False) != expected:
        raise IntegrityError(
            f"Probe weights {st_path} do not match the sha256 in {json_path.name}; re-create the probe."
        )
    tensors = load_file(str(st_path))
    head = build_head(meta["head"])
    state = {k[len("head.") :]: v for k, v in tensors.items() if k.startswith("head.")}
    try:
        head.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"Probe weights {st_path} do not fit the head in {json_path.name}: {exc}"
        ) from exc
    head.eval()
    t_mean = tensors["target.mean"].numpy() if "target.mean" in tensors else None
    t_std = tensors["target.std"].numpy() if "target.std" in tensors else None
    trained = TrainedHead(head, meta["head"], t_mean, t_std)
    return Probe(
        task=meta["task"],
        kind=meta["kind"],
        target_names=list(meta["targets"]),
        pooling=meta["pooling"],
        trained=trained,
        class_names=meta.get("class_names"),
        backbone=meta.get("backbone") or {},
        preprocess=meta.get("preprocessing") or {},
        metrics=meta.get("metrics") or {},
        training=meta.get("training") or {},
    )
