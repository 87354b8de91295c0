"""The SQLite file of a case library: schema, meta values, case rows and embedding blobs.

WHY SQLite: every change (a case with all its embeddings, a removal, a report) is one transaction, so a reader
sees a library either before or after it, never half of it, and a writer killed mid-case leaves nothing
behind (the journal rolls it back). WAL mode lets queries run while `voxelfm index add` writes.
Embeddings are stored here (the FAISS index files are derived from them and can always be rebuilt).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .embeddings import CaseEmbeddings
from .records import CaseRecord, CaseSource

FORMAT_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cases (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  case_id TEXT NOT NULL UNIQUE,
  source_key TEXT NOT NULL UNIQUE,
  path TEXT NOT NULL,
  abs_path TEXT NOT NULL,
  series_uid TEXT NOT NULL DEFAULT '',
  patient_id TEXT NOT NULL DEFAULT '',
  study_uid TEXT NOT NULL DEFAULT '',
  content_sha256 TEXT NOT NULL DEFAULT '',
  report TEXT,
  findings TEXT,
  info TEXT NOT NULL DEFAULT '{}',
  added_at TEXT NOT NULL,
  generation INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS cases_generation ON cases (generation);
CREATE TABLE IF NOT EXISTS embeddings (
  case_row INTEGER PRIMARY KEY REFERENCES cases (id) ON DELETE CASCADE,
  cls BLOB NOT NULL,
  mean BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS regions (
  case_row INTEGER NOT NULL REFERENCES cases (id) ON DELETE CASCADE,
  scale INTEGER NOT NULL,
  n INTEGER NOT NULL,
  vectors BLOB NOT NULL,
  centres BLOB NOT NULL,
  PRIMARY KEY (case_row, scale)
);
CREATE TABLE IF NOT EXISTS removed (row INTEGER PRIMARY KEY, generation INTEGER NOT NULL);
"""
CASE_COLUMNS = (
    "id, case_id, path, abs_path, source_key, series_uid, patient_id, study_uid, content_sha256, report, "
    "findings, info, added_at, generation"
)


def connect(path: Path) -> sqlite3.Connection:
    """A connection with WAL, foreign keys and a busy timeout (a writer's commit never fails a reader)."""
    try:
        con = sqlite3.connect(str(path), timeout=30.0, isolation_level=None, check_same_thread=False)
        con.execute("PRAGMA foreign_keys = ON")
        con.execute("PRAGMA busy_timeout = 30000")
        mode = con.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        con.execute("PRAGMA synchronous = FULL" if mode != "wal" else "PRAGMA synchronous = NORMAL")
    except sqlite3.DatabaseError as exc:
        raise InputError(f"{path} is not a readable case library database ({exc}).") from exc
    return con


def create_schema(con: sqlite3.Connection) -> None:
    with transaction(con):
        for statement in filter(str.strip, SCHEMA.split(";")):
            con.execute(statement)
        if get_meta(con, "format_version") is None:
            set_meta(con, "format_version", FORMAT_VERSION)
            set_meta(con, "generation", 0)
            set_meta(con, "created_at", time.strftime("%Y-%m-%dT%H:%M:%S"))


@contextlib.contextmanager
def transaction(con: sqlite3.Connection, immediate: bool = True) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on any error): all or nothing."""
    con.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


@contextlib.contextmanager
def snapshot(con: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A read transaction: every SELECT inside sees the same committed state."""
    if con.in_transaction:
        yield con
        return
    con.execute("BEGIN")
    try:
        yield con
    finally:
        con.execute("COMMIT")


def get_meta(con: sqlite3.Connection, key: str, default: Any = None) -> Any:
    row = con.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return json.loads(row[0]) if row else default


def set_meta(con: sqlite3.Connection, key: str, value: Any) -> None:
    con.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value)))


def bump_generation(con: sqlite3.Connection) -> int:
    generation = int(get_meta(con, "generation", 0)) + 1
    set_meta(con, "generation", generation)
    return generation


# ---------------------------------------------------------------- rows <-> objects


def _blob(array: np.ndarray, dtype) -> bytes:
    return np.ascontiguousarray(array, dtype=dtype).tobytes()


def record_from_row(row: tuple) -> CaseRecord:
    (rid, case_id, path, abs_path, key, series, patient, study, sha, report, findings, info, added, gen) = row
    return CaseRecord(
        row=int(rid),
        case_id=case_id,
        path=path,
        abs_path=abs_path,
        source_key=key,
        series_uid=series,
        patient_id=patient,
        study_uid=study,
        content_sha256=sha,
        report=report,
        findings=json.loads(findings) if findings is not None else None,
        info=json.loads(info or "{}"),
        added_at=added,
        generation=int(gen),
    )


def insert_case(
    con: sqlite3.Connection,
    source: CaseSource,
    case_id: str,
    emb: CaseEmbeddings,
    info: dict[str, Any],
    content_sha256: str,
    generation: int,
) -> int:
    """Insert one case with its embeddings (inside the caller's transaction); returns its row id."""
    cur = con.execute(
        "INSERT INTO cases (case_id, source_key, path, abs_path, series_uid, patient_id, study_uid, "
        "content_sha256, report, findings, info, added_at, generation) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            case_id,
            source.key,
            source.path,
            os.path.abspath(source.path) if source.path else "",
            source.series_uid or "",
            source.patient_id or "",
            source.study_uid or "",
            content_sha256,
            source.report,
            json.dumps(source.findings) if source.findings is not None else None,
            json.dumps(info),
            time.strftime("%Y-%m-%dT%H:%M:%S"),
            generation,
        ),
    )
    row = int(cur.lastrowid)
    con.execute(
        "INSERT INTO embeddings (case_row, cls, mean) VALUES (?, ?, ?)",
        (row, _blob(emb.cls, np.float32), _blob(emb.mean, np.float32)),
    )
    for scale, (vectors, centres) in enumerate(zip(emb.blocks, emb.centres, strict=True)):
        con.execute(
            "INSERT INTO regions (case_row, scale, n, vectors, centres) VALUES (?, ?, ?, ?, ?)",
            (row, scale, int(len(vectors)), _blob(vectors, np.float16), _blob(centres, np.float32)),
        )
    return row


def global_matrix(
    con: sqlite3.Connection, kind: str, rows: list[int] | None, dim: int
) -> tuple[np.ndarray, np.ndarray]:
    """(row ids, [n, dim] float32) of the cls or mean embeddings of ``rows`` (all cases when None)."""
    column = "cls" if kind == "cls" else "mean"
    if rows is None:
        got = con.execute(f"SELECT case_row, {column} FROM embeddings ORDER BY case_row").fetchall()
    else:
        got = _select_in(con, f"SELECT case_row, {column} FROM embeddings WHERE case_row IN ({{}})", rows)
    ids = np.array([r for r, _ in got], dtype=np.int64)
    mat = np.frombuffer(b"".join(b for _, b in got), dtype=np.float32).reshape(len(got), dim)
    return ids, mat


def region_blocks(
    con: sqlite3.Connection, rows: list[int], dim: int, scale: int
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """row -> ([n, dim] float32 block vectors, [n, 3] RAS centres) of one block scale."""
    sql = (
        f"SELECT case_row, n, vectors, centres FROM regions WHERE scale = {int(scale)} AND case_row IN ({{}})"
    )
    got = _select_in(con, sql, rows)
    return {
        int(r): (
            np.frombuffer(v, dtype=np.float16).reshape(n, dim).astype(np.float32),
            np.frombuffer(c, dtype=np.float32).reshape(n, 3),
        )
        for r, n, v, c in got
    }


def _select_in(con: sqlite3.Connection, sql: str, rows: list[int], chunk: int = 500) -> list[tuple]:
    out: list[tuple] = []
    rows = [int(r) for r in rows]
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        out += con.execute(sql.format(",".join("?" * len(part))), part).fetchall()
    return out
