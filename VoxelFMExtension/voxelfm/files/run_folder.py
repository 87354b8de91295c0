"""Run folders (``pretrain --out``, ``demo --out``, ``pretrain --export-hub``) are VoxelFM's alone.

A run folder is new, empty, or carries the marker ``.voxelfm-run.json`` (``{"kind", "created",
"voxelfm_version"}``) that the run writes first, before any other file. A folder holding anything else (the
user's config.yaml, metrics.jsonl, model.safetensors, ...) is refused, so a run never replaces a user's file
with its own of the same name. The marker also keeps runs of different kinds apart (a demo folder is not a
pretraining folder).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from collections.abc import Iterable
from fnmatch import fnmatchcase
from pathlib import Path

import voxelfm

MARKER = ".voxelfm-run.json"
# Temporary names our atomic writes use (``.NAME.<random>.tmp<suffix>``): left only by a killed process.
_OUR_TEMP = re.compile(r"^\..+\.tmp(\.[A-Za-z0-9.]+)?$")


def run_kind(folder: str | os.PathLike) -> str | None:
    """The kind in the folder's marker, or None when it has no (readable) marker."""
    try:
        data = json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    kind = data.get("kind") if isinstance(data, dict) else None
    return kind if isinstance(kind, str) else None


def foreign_entries(folder: str | os.PathLike, kind: str, names: Iterable[str]) -> list[str]:
    """Entries of an existing, non-empty ``folder`` that a run of ``kind`` did not write (all, without our
    marker). ``names``: the entries such runs write, as exact names or patterns (``hit*.png``)."""
    folder = Path(folder)
    entries = sorted(p.name for p in folder.iterdir())
    if run_kind(folder) != kind:
        return [e for e in entries if e != MARKER] or entries
    patterns = [*names, MARKER]
    return [e for e in entries if not any(fnmatchcase(e, p) for p in patterns) and not _OUR_TEMP.match(e)]


def claim_run_folder(folder: str | os.PathLike, kind: str) -> Path:
    """Create ``folder`` (if needed) and write its marker before anything else goes in; returns the folder."""
    from .atomic import atomic_write_text  # numpy: not at CLI parse time

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if run_kind(folder) != kind:
        marker = {
            "kind": kind,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "voxelfm_version": voxelfm.__version__,
        }
        atomic_write_text(folder / MARKER, json.dumps(marker, indent=2) + "\n")
    return folder
