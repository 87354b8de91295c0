"""`voxelfm index rebuild` on a damaged library.sqlite: copy every case whose rows still read into a new file.

WHY case by case with point lookups: in a truncated or partly overwritten SQLite file a full table scan stops
at the first bad page, but a lookup by primary key touches only the pages on its path, so every case whose
own rows survive is recovered. Ids are AUTOINCREMENT and every add bumps the library generation, so the ids to
try are 1..generation (plus whatever a scan still lists). The damaged file is kept beside the new one
(``library.sqlite.damaged-<time>``); the FAISS files are then rebuilt from the recovered embeddings.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from . import store

_TABLE_ROWS = {
    "cases": f"SELECT {store.CASE_COLUMNS} FROM cases WHERE id = ?",
    "embeddings": "SELECT case_row, cls, mean FROM embeddings WHERE case_row = ?",
    "regions": "SELECT case_row, scale, n, vectors, centres FROM regions WHERE case_row = ?",
}


@dataclass
class RecoveryReport:
    recovered: list[str] = field(default_factory=list)  # case ids
    lost: list[str] = field(default_factory=list)  # "case id (why)" or "row N (why)"
    kept: Path | None = None  # the damaged file, moved aside

    def summary(self) -> str:
        text = f"recovered {len(self.recovered)} case(s) from the damaged database"
        if self.lost:
            few = "; ".join(self.lost[:8]) + (
                f"; ... ({len(self.lost)} in all)" if len(self.lost) > 8 else ""
            )
            text += f"; could NOT recover {len(self.lost)}: {few} (add them again with `voxelfm index add`)"
        if self.kept is not None:
            text += f"; the damaged file is kept as {self.kept.name}"
        return text


def recover_database(db: Path) -> RecoveryReport:
    """Replace the damaged ``db`` by a new one holding every case that still reads (InputError when nothing
    at all can be read: an empty file, or no library settings left)."""
    db = Path(db)
    if not db.is_file() or db.stat().st_size == 0:
        raise InputError(
            f"{db} is empty (0 bytes): nothing is left in it to recover. Add the cases again into a new folder "
            "with `voxelfm index add NEW_FOLDER IMAGE...` (the image files were never touched)."
        )
    readable = _readable_copy(db)
    src = sqlite3.connect(f"{readable.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    try:
        meta = _meta(src, db)
        rows = _candidate_rows(src, meta)
        new = db.with_name(db.name + ".recovering")
        _unlink(new)
        dst = store.connect(new)
        report = RecoveryReport()
        try:
            store.create_schema(dst)
            with store.transaction(dst):
                for key, value in meta.items():
                    if not key.startswith("index."):  # the index files are rebuilt
                        dst.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))
                for row in rows:
                    _copy_case(src, dst, row, report)
        finally:
            dst.close()
    finally:
        src.close()
        _unlink(readable)
    kept = db.with_name(f"{db.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(db, kept)
    for suffix in ("-wal", "-shm"):
        _unlink(db.with_name(db.name + suffix))
    os.replace(new, db)
    report.kept = kept
    return report


def _readable_copy(db: Path) -> Path:
    """A copy SQLite will read: cut to whole pages, the header's page count set to what is there (a truncated
    file is otherwise "malformed" as a whole), rollback-journal mode (no -wal/-shm needed beside it)."""
    data = db.read_bytes()
    copy = db.with_name(db.name + ".reading")
    if len(data) >= 100 and data.startswith(b"SQLite format 3\x00"):
        size = int.from_bytes(data[16:18], "big")
        size = 65536 if size == 1 else size
        pages = len(data) // size if size >= 512 else 0
        if pages:
            fixed = bytearray(data[: pages * size])
            fixed[28:32] = pages.to_bytes(4, "big")
            fixed[18:20] = b"\x01\x01"
            data = bytes(fixed)
    copy.write_bytes(data)
    return copy


def _meta(src: sqlite3.Connection, db: Path) -> dict[str, str]:
    try:
        meta = dict(src.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.DatabaseError as exc:
        raise InputError(
            f"{db} is too damaged to recover: its library settings (model, embedding size) cannot be read "
            f"({exc}). Add the cases again into a new folder with `voxelfm index add NEW_FOLDER IMAGE...`."
        ) from exc
    if "dim" not in meta or "format_version" not in meta:
        raise InputError(
            f"{db} holds no library settings to recover from; add the cases again into a new folder with "
            "`voxelfm index add NEW_FOLDER IMAGE...`."
        )
    return meta


def _candidate_rows(src: sqlite3.Connection, meta: dict[str, str]) -> list[int]:
    rows: set[int] = set(range(1, int(json.loads(meta.get("generation", "0"))) + 1))
    for sql in ("SELECT id FROM cases", "SELECT case_row FROM embeddings"):
        try:
            for (r,) in src.execute(sql):
                rows.add(int(r))
        except sqlite3.DatabaseError:
            pass  # a scan stops at the first bad page; the point lookups below still reach the rest
    return sorted(rows)


def _copy_case(src: sqlite3.Connection, dst: store.Connection, row: int, report: RecoveryReport) -> None:
    got: dict[str, list[tuple]] = {}
    try:
        for table, sql in _TABLE_ROWS.items():
            got[table] = src.execute(sql, (row,)).fetchall()
    except sqlite3.DatabaseError as exc:
        case = got.get("cases")
        report.lost.append(f"{case[0][1] if case else f'row {row}'} ({exc})")
        return
    if not got["cases"]:
        return  # removed, or never used
    case_id = got["cases"][0][1]
    if not got["embeddings"]:
        report.lost.append(f"{case_id} (its embeddings are gone)")
        return
    try:
        scales = len(json.loads(got["cases"][0][11] or "{}").get("blocks", []))
    except ValueError:
        scales = -1
    if scales != len(got["regions"]):
        report.lost.append(f"{case_id} (its region embeddings are incomplete)")
        return
    dst.execute(f"INSERT INTO cases ({store.CASE_COLUMNS}) VALUES ({','.join('?' * 14)})", got["cases"][0])
    dst.execute("INSERT INTO embeddings (case_row, cls, mean) VALUES (?, ?, ?)", got["embeddings"][0])
    for region in got["regions"]:
        dst.execute(
            "INSERT INTO regions (case_row, scale, n, vectors, centres) VALUES (?, ?, ?, ?, ?)", region
        )
    report.recovered.append(case_id)


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
