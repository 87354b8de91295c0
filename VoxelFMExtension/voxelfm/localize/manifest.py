"""Manifests of annotated scans for fitting a localisation probe: one row per scan, columns ``image`` and
``points`` (a .mrk.json point list; paths relative to the manifest), optional ``id``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..files.manifest_table import read_manifest_rows, resolve_path

COLUMNS = ("image", "points")


@dataclass(frozen=True)
class AnnotatedScan:
    id: str
    image: Path
    points: Path


def read_localisation_manifest(path: str | Path) -> list[AnnotatedScan]:
    """The rows of a CSV / TSV / JSON Lines manifest; every file must exist."""
    path = Path(path)
    table = read_manifest_rows(path)
    if table.columns is not None and any(c not in table.columns for c in COLUMNS):
        raise InputError(f"Manifest {path}: needs columns 'image' and 'points', found {table.columns}.")
    out = []
    for line, row in table.rows:
        if not isinstance(row, dict) or any(not str(row.get(c) or "").strip() for c in COLUMNS):
            raise InputError(f"Manifest {path}, line {line}: needs an 'image' and a 'points' value.")
        image, points = (resolve_path(path, str(row[c]).strip()) for c in COLUMNS)
        for what, p in (("image", image), ("points file", points)):
            if not p.exists():
                raise InputError(f"Manifest {path}, line {line}: {what} {p} not found.")
        out.append(AnnotatedScan(str(row.get("id") or image.name), image, points))
    if not out:
        raise InputError(f"Manifest {path} has no rows; add one row per annotated scan (image, points).")
    return out
