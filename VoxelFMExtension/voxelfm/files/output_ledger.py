"""Which files VoxelFM wrote: a ledger of its own outputs, so a later run may replace those and nothing else.

WHY a ledger in our cache folder, not a sidecar beside each output nor a tag in the file's own metadata: it
works the same for every format we write (NIfTI, NRRD, .seg.nrrd, .npz, PNG, CSV, JSON, safetensors), leaves
the user's folders clean (and works where they are read-only), and it holds the file's size and sha256, so a
file the user edited, re-saved from Slicer, or copied over ours afterwards is no longer "ours". A missing
record (another machine, a cleared cache, a different VOXELFM_CACHE_DIR) errs on the safe side: the file is
then treated as the user's, and replacing it needs ``--overwrite``.

Each record also names the KIND of output ("segmentation probe", "report draft", ...): a run replaces only an
output of its own kind (a rerun over its earlier outputs), never another command's (a report saved over a
probe's header would destroy the probe).

Record: ``$VOXELFM_CACHE_DIR/outputs/<sha1 of the absolute path>.json`` =
``{"path", "size", "sha256", "by", "kind", "written"}`` (records without "kind", from before, use "by").
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from .integrity import sha256_of
from .locations import cache_root

log = logging.getLogger(__name__)


def entry_path(path: str | os.PathLike) -> Path:
    """The directory entry a write replaces: the folder resolved, the name kept (a symlink is not followed)."""
    p = Path(path).expanduser()
    return p.parent.resolve() / p.name


def _record_path(entry: Path) -> Path:
    key = hashlib.sha1(str(entry).encode("utf-8")).hexdigest()
    return cache_root() / "outputs" / f"{key}.json"


def _sha256(path: Path) -> str:
    return sha256_of(path, memo=False)


def record_output(path: str | os.PathLike, by: str = "voxelfm", kind: str | None = None) -> None:
    """Note that VoxelFM (command ``by``) just wrote ``path`` as an output of ``kind`` (its size and sha256);
    a read-only cache only skips the note."""
    entry = entry_path(path)
    if not entry.is_file() or entry.is_symlink():
        return
    record = {
        "path": str(entry),
        "size": entry.stat().st_size,
        "sha256": _sha256(entry),
        "by": by,
        "kind": kind or by,
        "written": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    target = _record_path(entry)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, target)
    except OSError as exc:
        log.debug("could not record output %s in the ledger (%s)", entry, exc)


def is_own_output(path: str | os.PathLike) -> bool:
    """True when ``path`` is a file VoxelFM wrote and nobody changed since (same size and sha256)."""
    return own_output(path) is not None


def own_output(path: str | os.PathLike) -> OwnOutput | None:
    """Who wrote ``path`` and as what, when it is a file VoxelFM wrote and nobody changed since; else None."""
    entry = entry_path(path)
    if not entry.is_file() or entry.is_symlink():
        return None
    try:
        record = json.loads(_record_path(entry).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("path") != str(entry):
        return None
    if record.get("size") != entry.stat().st_size or record.get("sha256") != _sha256(entry):
        return None
    by = str(record.get("by") or "voxelfm")
    return OwnOutput(by=by, kind=str(record.get("kind") or by), legacy="kind" not in record)


@dataclass(frozen=True)
class OwnOutput:
    by: str  # the command (or Slicer module) that wrote it
    kind: str  # what it is: "segmentation probe", "report draft", ...
    legacy: bool = False  # recorded before kinds were: the same command may replace it
