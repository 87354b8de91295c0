"""Probe manifests: one row per case, CSV/TSV or JSON Lines.

Columns: ``image`` (path, relative to the manifest's folder unless absolute), target columns, for
survival ``time`` + ``event``; optional ``id`` (row name in tables), ``split`` (train/val/test) or
``fold`` (any fold id). Every other column is a target unless ``targets`` names them explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..files.manifest_table import read_manifest_rows, resolve_path

RESERVED = ("image", "id", "split", "fold")


@dataclass
class Manifest:
    path: Path
    images: list[Path]
    ids: list[str]
    targets: list[list[Any]]  # [N][K] raw values (survival: [time, event])
    target_names: list[str]
    split: list[str] | None = None
    folds: list[str] | None = None

    def __len__(self) -> int:
        return len(self.images)


def _read_rows(path: Path) -> list[dict[str, Any]]:
    table = read_manifest_rows(path)
    for n, row in table.rows:
        if not isinstance(row, dict):
            raise InputError(f"{path}, line {n}: each line must be a JSON object.")
    return [row for _, row in table.rows]


def read_manifest(
    path: str | Path,
    task: str,
    targets: list[str] | None = None,
    time_column: str = "time",
    event_column: str = "event",
    check_files: bool = True,
    need_targets: bool = True,
) -> Manifest:
    """Parse and validate a manifest (columns, image paths); target values are validated by ``targets.py``."""
    path = Path(path)
    rows = _read_rows(path)
    if not rows:
        raise InputError(f"Manifest {path} has no cases; add one row per image (column 'image' + targets).")
    columns = list(rows[0].keys())
    if "image" not in columns:
        raise InputError(f"Manifest {path} has no 'image' column (columns: {', '.join(columns)}).")
    if not need_targets:
        names: list[str] = []
    elif task == "survival":
        names = [time_column, event_column]
    elif targets:
        names = list(targets)
    else:
        exclude = set(RESERVED) | {time_column, event_column}
        names = [c for c in columns if c not in exclude]
        if not names:
            raise InputError(f"Manifest {path} has no target column besides {', '.join(RESERVED)}.")
    missing_cols = [c for c in names if not all(c in r for r in rows)]
    if missing_cols:
        raise InputError(
            f"Manifest {path} lacks column(s) {missing_cols} in some or all rows (columns: {columns})."
        )

    images, ids, bad = [], [], []
    for n, row in enumerate(rows):
        raw = str(row.get("image") or "").strip()
        if not raw:
            raise InputError(f"Manifest {path}, case {n}: empty 'image' path.")
        p = resolve_path(path, raw)
        if check_files and not p.exists():
            bad.append(str(p))
        images.append(p)
        ids.append(str(row.get("id") or "").strip() or Path(raw).name)
    if bad:
        shown = "\n  ".join(bad[:5]) + (f"\n  ... ({len(bad)} in all)" if len(bad) > 5 else "")
        raise InputError(
            f"Manifest {path}: {len(bad)} image(s) not found (paths are relative to the manifest's folder):\n  {shown}"
        )
    split = [str(r.get("split") or "").strip() for r in rows] if "split" in columns else None
    folds = [str(r.get("fold") or "").strip() for r in rows] if "fold" in columns else None
    for name, col in (("split", split), ("fold", folds)):
        if col is not None and any(v == "" for v in col):
            raise InputError(
                f"Manifest {path}: column '{name}' is empty for some cases; fill it for every case."
            )
    return Manifest(path, images, ids, [[r.get(c) for c in names] for r in rows], names, split, folds)
