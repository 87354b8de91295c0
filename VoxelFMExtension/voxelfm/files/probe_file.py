"""One file format for every probe kind: NAME.safetensors (weights) + NAME.json (everything else).

The JSON starts with a shared header (type "voxelfm-probe", format_version, task, created, voxelfm_version,
backbone, preprocessing, metrics, weights {file, sha256}); the task's own fields sit beside it. Both files
are written atomically, the JSON last, so a probe whose JSON exists is complete, and the weights are checked
against the JSON's sha256 on every read. People edit these JSON files by hand, so reading validates the
header and names the offending field.

Format 1 files of both former types ("voxelfm-probe" and "voxelfm-segmentation-probe") still load: they are
read into the format-2 layout (``format_version`` keeps the version the file has).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch

import voxelfm

from ..errors import CheckpointError, IntegrityError
from .atomic import atomic_write_group
from .documents import TYPE_WORDS, describe, read_mapping
from .integrity import sha256_of
from .probe_paths import probe_paths

FILE_TYPE = "voxelfm-probe"
FORMAT_VERSION = 2
TASKS = ("classification", "regression", "survival", "segmentation", "localisation")
# Format 1 types -> the task they imply (None: the file names its task); format 2 uses FILE_TYPE only.
_V1_TYPES = {"voxelfm-probe": None, "voxelfm-segmentation-probe": "segmentation"}
# What write_probe_files sets itself; the caller's ``meta`` must not carry these.
_WRITER_FIELDS = ("type", "format_version", "task", "created", "voxelfm_version", "weights")
# The header every probe JSON has (after reading format 1 into the format-2 layout).
HEADER_FIELDS: dict[str, type] = {
    "type": str,
    "format_version": int,
    "task": str,
    "created": str,
    "voxelfm_version": str,
    "backbone": dict,
    "preprocessing": dict,
    "metrics": dict,
    "weights": dict,
}
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

Tensor = np.ndarray | torch.Tensor


def json_safe(obj: Any) -> Any:
    """JSON-ready copy: numpy arrays/scalars as lists/numbers, non-finite floats as null."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


# --- writing ------------------------------------------------------------------------------------------


def write_probe_files(
    path: str | os.PathLike, task: str, tensors: Mapping[str, Tensor], meta: Mapping[str, Any]
) -> tuple[Path, Path]:
    """Write NAME.safetensors then NAME.json (both atomically); returns (safetensors path, json path).

    ``meta`` holds the task's own fields plus ``backbone``, ``preprocessing`` and ``metrics`` (each a dict,
    empty when absent); the header fields and ``weights`` are filled in here.
    """
    if task not in TASKS:
        raise ValueError(f"Unknown probe task {task!r}; expected one of {', '.join(TASKS)}.")
    clash = [k for k in _WRITER_FIELDS if k in meta]
    if clash:
        raise ValueError(f"meta must not set {clash}: write_probe_files fills them in.")
    st_path, json_path = probe_paths(path)
    flat = {k: _cpu_tensor(v) for k, v in tensors.items()}
    st_meta = {"type": FILE_TYPE, "format_version": str(FORMAT_VERSION), "task": task}
    header = _header(task, meta)

    def weights(tmp: Path) -> None:
        safetensors.torch.save_file(flat, str(tmp), metadata=st_meta)
        header["weights"] = {"file": st_path.name, "sha256": sha256_of(tmp, memo=False)}

    def text(tmp: Path) -> None:
        tmp.write_text(json.dumps(json_safe(header), indent=2, allow_nan=False, default=str) + "\n")

    # both written before either replaces its file: a failure leaves the previous probe whole
    atomic_write_group([(st_path, weights, ".safetensors"), (json_path, text, "")])
    return st_path, json_path


def recorded_fields(probe: Any) -> dict[str, Any]:
    """The header fields every probe kind takes from its probe object (``backbone``, ``preprocessing``,
    ``metrics``): written one way, so the compatibility check reads every kind's record alike."""
    return {"backbone": probe.backbone, "preprocessing": probe.preprocess, "metrics": probe.metrics}


def _cpu_tensor(value: Tensor) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    return value.detach().cpu().contiguous()


def _header(task: str, meta: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "type": FILE_TYPE,
        "format_version": FORMAT_VERSION,
        "task": task,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "voxelfm_version": voxelfm.__version__,
        "backbone": {},
        "preprocessing": {},
        "metrics": {},
        **meta,
    }


# --- reading ------------------------------------------------------------------------------------------


def read_probe_files(
    path: str | os.PathLike, tasks: tuple[str, ...], as_numpy: bool = False
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(meta, tensors) of a probe whose task is one of ``tasks``; the weights are checked against the JSON.

    ``meta`` is the validated JSON in the format-2 layout; tensors are torch tensors (numpy with ``as_numpy``).
    """
    st_path, json_path = probe_paths(path)
    meta = read_probe_header(path, tasks)
    if not st_path.is_file():
        raise CheckpointError(f"Probe weights {st_path} are missing (the JSON {json_path.name} is there).")
    if sha256_of(st_path, memo=False) != meta["weights"]["sha256"]:
        raise IntegrityError(
            f"Probe weights {st_path} do not match the sha256 in {json_path.name}; the file changed. "
            "Re-create the probe."
        )
    try:
        tensors = safetensors.torch.load_file(str(st_path))
    except Exception as exc:  # safetensors raises several types for a corrupt file
        raise CheckpointError(
            f"Probe weights {st_path} cannot be read ({exc}); re-create the probe."
        ) from exc
    if as_numpy:
        return meta, {k: v.numpy() for k, v in tensors.items()}
    return meta, tensors


def read_probe_header(path: str | os.PathLike, tasks: tuple[str, ...] = TASKS) -> dict[str, Any]:
    """The validated JSON of a probe (no weights read); CheckpointError naming the field if it is bad."""
    _, json_path = probe_paths(path)
    meta = read_mapping(
        json_path,
        CheckpointError,
        "probe file",
        "re-create the probe",
        missing="pass the probe's NAME, NAME.json or NAME.safetensors",
    )
    version = _check_version(meta, json_path)
    if version == 1:
        meta = _from_format_1(meta, json_path)
    check_fields(meta, HEADER_FIELDS, json_path)
    _check_weights(meta["weights"], json_path)
    _check_task(meta["task"], tasks, json_path)
    return meta


def _check_version(meta: dict[str, Any], where: Path) -> int:
    """Validate ``type`` and ``format_version``: format 1 had two type names, format 2 has one."""
    check_fields(meta, {"type": str}, where)
    kind = meta["type"]
    if kind not in _V1_TYPES:
        raise CheckpointError(
            f"{where}: field 'type' is {kind!r}; expected {FILE_TYPE!r}. Is this a VoxelFM probe file?"
        )
    check_fields(meta, {"format_version": int}, where)
    version = meta["format_version"]
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{where}: field 'format_version' is {version}, newer than this VoxelFM reads ({FORMAT_VERSION}); "
            "update the extension."
        )
    if version < 1:
        raise CheckpointError(
            f"{where}: field 'format_version' is {version}; expected 1 to {FORMAT_VERSION}."
        )
    if version > 1 and kind != FILE_TYPE:
        raise CheckpointError(
            f"{where}: field 'type' is {kind!r}, a format-1 name; format {version} files say {FILE_TYPE!r}."
        )
    return version


def _from_format_1(meta: dict[str, Any], where: Path) -> dict[str, Any]:
    """A format-1 JSON in the format-2 layout; former segmentation probes named some fields differently."""
    out = dict(meta, type=FILE_TYPE)
    task = _V1_TYPES[meta["type"]]
    if task is None:  # "voxelfm-probe" format 1 already had the format-2 header
        return out
    check_fields(meta, {"preprocess": dict, "weights_file": str, "weights_sha256": str}, where)
    out.setdefault("task", task)
    out.setdefault("voxelfm_version", "unknown")  # not recorded by format 1 segmentation probes
    out["preprocessing"] = out.pop("preprocess")
    out["weights"] = {"file": out.pop("weights_file"), "sha256": out.pop("weights_sha256")}
    return out


def _check_weights(weights: dict[str, Any], where: Path) -> None:
    check_fields(weights, {"file": str, "sha256": str}, where, prefix="weights.")
    if not _SHA256.match(weights["sha256"]):
        raise CheckpointError(
            f"{where}: field 'weights.sha256' is {weights['sha256']!r}; expected 64 lower-case hex digits."
        )


def _check_task(task: str, tasks: tuple[str, ...], where: Path) -> None:
    if task not in TASKS:
        raise CheckpointError(f"{where}: field 'task' is {task!r}; expected one of {', '.join(TASKS)}.")
    if task not in tasks:
        raise CheckpointError(
            f"{where}: field 'task' is {task!r}, but only {', '.join(tasks)} probes are read here; "
            f"use this probe with the {task} tools."
        )


def check_fields(
    meta: Mapping[str, Any], fields: Mapping[str, type], where: str | os.PathLike, prefix: str = ""
) -> None:
    """CheckpointError naming the first field of ``fields`` that is missing or not of its type.

    For the task-specific fields too (e.g. ``{"head": dict, "targets": list}``); ``float`` accepts integers.
    """
    for name, want in fields.items():
        if name not in meta:
            raise CheckpointError(f"{where}: field '{prefix}{name}' is missing; re-create the probe.")
        value = meta[name]
        if not _is_a(value, want):
            raise CheckpointError(
                f"{where}: field '{prefix}{name}' is {describe(value)}; expected "
                f"{TYPE_WORDS.get(want, want.__name__)}."
            )


def check_choice(
    meta: Mapping[str, Any], name: str, choices: tuple[str, ...], where: str | os.PathLike, prefix: str = ""
) -> None:
    """CheckpointError naming the field when ``meta[name]`` is not one of ``choices`` (an edited or foreign
    value, e.g. kind "astrology", must not fall through to some default behaviour)."""
    check_fields(meta, {name: str}, where, prefix)
    if meta[name] not in choices:
        raise CheckpointError(
            f"{where}: field '{prefix}{name}' is {describe(meta[name])}; expected one of {', '.join(choices)}."
        )


def check_number(
    meta: Mapping[str, Any],
    name: str,
    where: str | os.PathLike,
    minimum: float | None = None,
    positive: bool = False,
    optional: bool = False,
    prefix: str = "",
) -> None:
    """CheckpointError naming the field unless ``meta[name]`` is a finite number in range (or null/absent when
    ``optional``)."""
    value = meta.get(name)
    if optional and value is None:
        return
    check_fields(meta, {name: float}, where, prefix)
    bad = not np.isfinite(value) or (positive and value <= 0) or (minimum is not None and value < minimum)
    if bad:
        rule = "> 0" if positive else (f">= {minimum:g}" if minimum is not None else "finite")
        raise CheckpointError(
            f"{where}: field '{prefix}{name}' is {describe(value)}; expected a number {rule}."
        )


def _is_a(value: Any, want: type) -> bool:
    if isinstance(value, bool):  # JSON true/false are not numbers here
        return want is bool
    if want is float:
        return isinstance(value, int | float)
    return isinstance(value, want)
