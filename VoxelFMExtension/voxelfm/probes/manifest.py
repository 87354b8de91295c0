"""Probe manifests: one row per case, CSV/TSV or JSON Lines.

Columns: ``image`` (path, relative to the manifest's folder unless absolute), target columns, for
survival ``time`` + ``event``; optional ``id`` (row name in tables), ``split`` (train/val/test) or
``fold`` (any fold id), ``patient`` or ``group`` (cases of one patient stay together in every split). Every
other column is a target unless ``targets`` names them explicitly.

For fitting, one image is one row: a repeated row would count twice in cross-validation (and could sit in
training and test at once, inflating the metrics), and one image with two different targets is a
contradiction; both are refused, naming the rows.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..files.integrity import sha256_of
from ..files.manifest_table import read_manifest_rows, resolve_path

RESERVED = ("image", "id", "split", "fold", "patient", "group")
GROUP_COLUMNS = ("patient", "group")


@dataclass
class Manifest:
    path: Path
    images: list[Path]
    ids: list[str]
    targets: list[list[Any]]  # [N][K] raw values (survival: [time, event])
    target_names: list[str]
    split: list[str] | None = None
    folds: list[str] | None = None
    groups: list[str] | None = None  # patient (or group) per case, from the 'patient' or 'group' column

    def __len__(self) -> int:
        return len(self.images)


def _read_rows(path: Path) -> tuple[list[dict[str, Any]], list[int]]:
    """The rows and their line numbers in the file."""
    table = read_manifest_rows(path)
    for n, row in table.rows:
        if not isinstance(row, dict):
            raise InputError(f"{path}, line {n}: each line must be a JSON object.")
    return [row for _, row in table.rows], [n for n, _ in table.rows]


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
    rows, lines = _read_rows(path)
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
    split, folds, groups = (
        _column(path, rows, columns, c) for c in ("split", "fold", _group_column(path, columns))
    )
    targets = [[r.get(c) for c in names] for r in rows]
    if need_targets:
        _check_one_row_per_image(path, images, targets, lines)
    return Manifest(path, images, ids, targets, names, split, folds, groups)


def _group_column(path: Path, columns: list[str]) -> str | None:
    found = [c for c in GROUP_COLUMNS if c in columns]
    if len(found) > 1:
        raise InputError(f"Manifest {path} has both 'patient' and 'group' columns; keep one.")
    return found[0] if found else None


def _column(path: Path, rows: list[dict[str, Any]], columns: list[str], name: str | None) -> list[str] | None:
    if name is None or name not in columns:
        return None
    values = [str(r.get(name) or "").strip() for r in rows]
    if any(v == "" for v in values):
        raise InputError(f"Manifest {path}: column '{name}' is empty for some cases; fill it for every case.")
    return values


def _check_one_row_per_image(
    path: Path, images: list[Path], targets: list[list[Any]], lines: list[int]
) -> None:
    """InputError for an image listed twice: a duplicate row, or (worse) two different targets. The same image
    is the same path (links resolved) or the same bytes under another name (a copy)."""
    rows: dict[str, list[int]] = {}
    for n, key in enumerate(content_keys(images)):
        rows.setdefault(key, []).append(n)
    repeated = [r for r in rows.values() if len(r) > 1]
    if not repeated:
        return
    conflicts = [r for r in repeated if len({repr(targets[i]) for i in r}) > 1]
    if conflicts:
        shown = "; ".join(
            f"{images[r[0]].name}: " + ", ".join(f"line {lines[i]} says {targets[i]}" for i in r)
            for r in conflicts[:3]
        )
        raise InputError(
            f"Manifest {path}: {len(conflicts)} image(s) have conflicting targets ({shown}). One image has one "
            "label; fix or remove the wrong rows."
        )
    shown = "; ".join(_rows_of(images, lines, r) for r in repeated[:3])
    raise InputError(
        f"Manifest {path}: {len(repeated)} image(s) are listed more than once ({shown}). Repeated rows count "
        "twice in cross-validation and inflate its metrics; keep one row per image (a byte-identical copy under "
        "another name is the same image)."
    )


def _rows_of(images: list[Path], lines: list[int], rows: list[int]) -> str:
    names = {images[i].name for i in rows}
    if len(names) == 1:
        return f"{images[rows[0]].name} (lines {', '.join(str(lines[i]) for i in rows)})"
    return " = ".join(f"{images[i].name} (line {lines[i]})" for i in rows)


def content_keys(images: list[Path]) -> list[str]:
    """One key per image, equal for the same file under two paths (links) and for byte-identical copies.

    Cheap for distinct images: files are grouped by size, then by a hash of their first MiB, and only files
    that still look alike are hashed whole (a cohort of same-size uncompressed NIfTI is not read twice)."""
    keys = [os.path.realpath(p) for p in images]
    groups: dict[object, set[str]] = {}
    for key in set(keys):
        if os.path.isfile(key):
            groups.setdefault(os.path.getsize(key), set()).add(key)
    for stage in (_head_digest, lambda k: sha256_of(Path(k))):
        regrouped: dict[object, set[str]] = {}
        for label, same in groups.items():
            if len(same) > 1:
                for k in same:
                    regrouped.setdefault((label, stage(k)), set()).add(k)
        groups = regrouped
    digests = {k: f"content:{label}" for label, same in groups.items() if len(same) > 1 for k in same}
    return [digests.get(k, k) for k in keys]


def _head_digest(path: str, size: int = 1 << 20) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read(size)).hexdigest()
