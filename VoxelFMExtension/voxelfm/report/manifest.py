"""Report manifests (CSV/TSV/JSON Lines, one row per case) for `report-train` and `report-eval`.

A text column X is given inline (column ``X``) or as a file (column ``X_file``, a path relative to the
manifest), so long reports need not sit in a CSV cell. Image columns are paths relative to the manifest.
Optional column ``id`` names the row in outputs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..files.documents import read_text_file
from ..files.manifest_table import read_manifest_rows, resolve_path


def manifest_columns(path: str | os.PathLike) -> set[str]:
    """Column names of the first row (``X_file`` reported as ``X``)."""
    rows = _rows(Path(path))
    return {k[: -len("_file")] if k.endswith("_file") else k for k in rows[0][1]}


def _rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    table = read_manifest_rows(path)
    if not table.rows:
        raise InputError(f"Manifest {path} has no rows.")
    for n, row in table.rows:
        if not isinstance(row, dict):
            raise InputError(f"{path}, line {n}: each line must be a JSON object.")
    return table.rows


def _text(path: Path, n: int, row: dict[str, Any], column: str) -> str:
    value = row.get(column)
    if isinstance(value, str) and value.strip():
        return value
    file_value = row.get(f"{column}_file")
    if isinstance(file_value, str) and file_value.strip():
        file = resolve_path(path, file_value.strip())
        if not file.is_file():
            raise InputError(f"{path}, line {n}: {column}_file {file} not found.")
        return read_text_file(file, f"{path}, line {n}: {column}_file")
    raise InputError(f"{path}, line {n}: no '{column}' text (give column {column} or {column}_file).")


def read_report_manifest(
    path: str | os.PathLike, texts: Sequence[str], images: Sequence[str] = (), optional: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Rows with ``id``, every text column as a string, image (and optional path) columns as Paths."""
    path = Path(path)
    out = []
    for n, row in _rows(path):
        item: dict[str, Any] = {"id": str(row.get("id") or f"row{len(out) + 1}")}
        for column in images:
            raw = row.get(column)
            if not isinstance(raw, str) or not raw.strip():
                raise InputError(f"{path}, line {n}: column '{column}' (an image path) is empty or missing.")
            item[column] = resolve_path(path, raw.strip())
            if not item[column].exists():
                raise InputError(f"{path}, line {n}: image {item[column]} not found.")
        for column in optional:
            raw = row.get(column)
            item[column] = resolve_path(path, raw.strip()) if isinstance(raw, str) and raw.strip() else None
        for column in texts:
            item[column] = _text(path, n, row, column)
        out.append(item)
    return out
