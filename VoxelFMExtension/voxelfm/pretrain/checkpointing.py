"""Resumable training checkpoints: atomic writes, a ``latest.json`` pointer, keep-last-K pruning.

A checkpoint file appears under its final name only after it was fully written and fsynced (temp file +
``os.replace``), and ``latest.json`` is switched only after that; a crash at any moment therefore leaves
the previous latest checkpoint intact. Loading falls back to older files if the newest cannot be read.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..files.atomic import atomic_write, atomic_write_text

log = logging.getLogger(__name__)

FORMAT = "voxelfm-pretrain-checkpoint"
_NAME = re.compile(r"^step_(\d{8})\.pt$")


def checkpoint_dir(out: Path) -> Path:
    return out / "checkpoints"


def _torch_save(obj: Any, path: Path) -> None:
    with open(path, "wb") as f:
        torch.save(obj, f)


def list_checkpoints(out: Path) -> list[tuple[int, Path]]:
    d = checkpoint_dir(out)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def save_checkpoint(out: Path, step: int, state: dict[str, Any], max_to_keep: int, keep_every: int) -> Path:
    """Write step_XXXXXXXX.pt atomically, point latest.json at it, then prune old ones."""
    d = checkpoint_dir(out)
    d.mkdir(parents=True, exist_ok=True)
    for stale in d.glob(".step_*.tmp"):  # left by a process killed mid-write (only rank 0 writes here)
        stale.unlink(missing_ok=True)
    path = d / f"step_{step:08d}.pt"
    payload = {"format": FORMAT, "version": 1, "step": step, **state}
    atomic_write(path, lambda tmp: _torch_save(payload, tmp), fsync=True)
    atomic_write_text(d / "latest.json", json.dumps({"step": step, "file": path.name}), fsync=True)
    ckpts = list_checkpoints(out)
    keep = {s for s, _ in ckpts[-max_to_keep:]} | {s for s, _ in ckpts if keep_every and s % keep_every == 0}
    for s, p in ckpts:
        if s not in keep:
            p.unlink(missing_ok=True)
    return path


def _load(path: Path) -> dict[str, Any]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # checkpoints written before RNG states were stored as tensors (our own run folder)
        obj = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a VoxelFM pretraining checkpoint.")
    return obj


def load_latest(out: Path) -> dict[str, Any] | None:
    """The newest readable checkpoint (the one latest.json names first), or None when there is none."""
    ckpts = list_checkpoints(out)
    order = [p for _, p in reversed(ckpts)]
    pointer = checkpoint_dir(out) / "latest.json"
    if pointer.is_file():
        try:
            named = checkpoint_dir(out) / json.loads(pointer.read_text())["file"]
            order = [named] + [p for p in order if p != named]
        except (ValueError, KeyError, OSError):
            log.warning("%s is unreadable; using the newest checkpoint file instead.", pointer)
    errors = []
    for p in order:
        try:
            return _load(p)
        except Exception as exc:  # truncated / foreign file: try the previous one
            errors.append(f"{p.name}: {type(exc).__name__}")
            log.warning("Cannot load checkpoint %s (%s); trying an older one.", p, exc)
    if errors:
        raise CheckpointError(f"No loadable checkpoint in {checkpoint_dir(out)} ({'; '.join(errors)}).")
    return None
