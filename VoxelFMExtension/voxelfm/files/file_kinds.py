"""What an existing file is, in words, for the message that refuses to replace it.

The output ledger knows the kind of every file VoxelFM wrote; this module recognises the rest from their
first bytes (a probe header, a case library database, a features file, markups, a report draft), so a refusal
can say "it is a segmentation probe header", not only "it exists".
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

# Kinds of output (the ledger's "kind"): one name per kind, shared by the CLI and the Slicer logic, so a probe
# saved from Slicer may be replaced by `voxelfm segment --save-probe` and by nothing else.
FEATURES = "features file"
FEATURES_PICTURE = "features picture"
SEGMENTATION = "segmentation"
SEGMENTATION_PROBE = "segmentation probe"
COHORT_PROBE = "classification/regression/survival probe"
COHORT_PROBE_REPORT = "probe evaluation report"
COHORT_PROBE_PICTURE = "probe evaluation picture"
PREDICTIONS = "probe predictions table"
LANDMARKS = "landmark point list"
LOCALISATION_TEMPLATE = "localisation template"
LOCALISATION_PROBE = "localisation probe"
BOX = "box (markups ROI)"
REPORT_DRAFT = "report draft"
REPORT_EVALUATION = "report evaluation"
MODEL_FILE = "model file"

_SQLITE = b"SQLite format 3\x00"
_JSON_LIMIT = 4 << 20  # larger JSON files are not parsed just to name them


def describe_file(path: str | os.PathLike) -> str | None:
    """A few words naming what ``path`` holds ("a VoxelFM segmentation probe header"), None when unknown."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            head = f.read(64)
    except OSError:
        return None
    name = p.name.lower()
    if head.startswith(_SQLITE):
        return "a case library database" if name == "library.sqlite" else "an SQLite database"
    if name.endswith(".safetensors"):
        return "probe or model weights (safetensors)"
    if name.endswith(".npz") and head.startswith(b"PK"):
        return _npz_kind(p)
    if head.lstrip()[:1] in (b"{", b"[") and p.stat().st_size <= _JSON_LIMIT:
        return _json_kind(p)
    return None


def _npz_kind(p: Path) -> str | None:
    try:
        with zipfile.ZipFile(p) as z:
            names = set(z.namelist())
    except (OSError, zipfile.BadZipFile):
        return None
    return "a VoxelFM features file" if "patch.npy" in names else "a NumPy .npz archive"


def _json_kind(p: Path) -> str | None:
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    if data.get("type") == "voxelfm-probe":
        return f"a VoxelFM {data.get('task') or ''} probe header".replace("  ", " ")
    if "markups" in data:
        return "a Slicer markups file"
    if "sentences" in data:
        return "a report draft"
    return None
