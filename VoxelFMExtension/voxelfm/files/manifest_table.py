"""Manifest files as rows: CSV/TSV/JSON Lines parsing and paths relative to the manifest.

Shared by probe manifests (``probes.manifest``) and pretraining manifests (``pretrain.data``), so both
read the same formats the same way; each caller keeps its own columns and messages on top.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from .documents import read_text_file

JSONL_SUFFIXES = (".jsonl", ".ndjson")
TABLE_SUFFIXES = (".csv", ".tsv", ".txt")
MANIFEST_SUFFIXES = TABLE_SUFFIXES + JSONL_SUFFIXES


@dataclass
class ManifestRows:
    """``columns``: the CSV/TSV header (stripped; None for an empty file or JSON Lines).

    ``rows``: (line number, value); a CSV/TSV value is a dict column -> str (None where a row is short), a
    JSON Lines value is whatever the line holds (callers decide what they accept). Blank rows are dropped.
    """

    columns: list[str] | None
    rows: list[tuple[int, Any]]


def read_manifest_rows(path: Path) -> ManifestRows:
    """Parse ``path`` by its suffix; InputError for a missing file, an unknown format or a bad JSON line."""
    if not path.is_file():
        raise InputError(f"Manifest {path} not found.")
    suffix = path.suffix.lower()
    if suffix not in MANIFEST_SUFFIXES:
        raise InputError(f"Manifest {path}: unsupported format; use .csv, .tsv or .jsonl.")
    text = read_text_file(path, "Manifest", limit=None)
    if suffix in JSONL_SUFFIXES:
        return ManifestRows(None, _json_lines(path, text))
    reader = csv.DictReader(text.splitlines(), delimiter="\t" if suffix == ".tsv" else ",")
    if reader.fieldnames is None:
        return ManifestRows(None, [])
    reader.fieldnames = [f.strip() for f in reader.fieldnames]
    rows = [
        (reader.line_num, row)
        for row in reader
        if any((v or "").strip() for v in row.values() if isinstance(v, str))
    ]
    return ManifestRows(list(reader.fieldnames), rows)


def _json_lines(path: Path, text: str) -> list[tuple[int, Any]]:
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append((n, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}, line {n}: not valid JSON ({exc.msg}).") from exc
    return rows


def resolve_path(manifest: Path, raw: str) -> Path:
    """A path as written in a manifest: ``~`` expanded, relative paths relative to the manifest's folder."""
    p = Path(raw).expanduser()
    return p if p.is_absolute() else manifest.resolve().parent / p
