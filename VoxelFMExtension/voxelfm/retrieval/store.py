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


class LibraryDamagedError(InputError):
    """library.sqlite is empty, truncated or otherwise unreadable: `voxelfm index rebuild` recovers what it can."""


class LibraryReadOnlyError(InputError):
    """A change was asked of a library on a folder (or file) this process cannot write."""


def damaged(path: Path, why: str) -> LibraryDamagedError:
    folder = Path(path).parent
    return LibraryDamagedError(
        f"The case library database {path} is damaged ({why}). Run `voxelfm index rebuild {folder}` to recover "
        "the cases whose data is intact (it keeps the damaged file beside the new one and lists what it could "
        "not recover); nothing was changed."
    )


def read_only(folder: Path, why: str) -> LibraryReadOnlyError:
    return LibraryReadOnlyError(
        f"The case library {folder} is read-only ({why}): `voxelfm index list`, `query` and `report` can use it, "
        "but to change it copy the folder to a place you can write to."
    )


_DAMAGE = ("malformed", "not a database", "no such table", "no such column", "file is not a database")


def is_damage(exc: BaseException) -> bool:
    """An sqlite error that means the file is damaged (not: locked, busy, read-only, a constraint)."""
    if isinstance(exc, sqlite3.IntegrityError):
        return False
    return type(exc) is sqlite3.DatabaseError or any(w in str(exc).lower() for w in _DAMAGE)


def is_read_only(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "readonly" in text or "read-only" in text or "unable to open database file" in text


class Connection:
    """An sqlite3 connection whose errors say what to do: a damaged file -> LibraryDamagedError (rebuild), a
    write to a read-only library -> LibraryReadOnlyError; everything else passes through."""

    def __init__(self, con: Connection, path: Path) -> None:
        self._con = con
        self.path = Path(path)

    def execute(self, sql: str, parameters=()) -> Cursor:
        try:
            return Cursor(self._con.execute(sql, parameters), self)
        except sqlite3.DatabaseError as exc:
            raise self.explain(exc) from exc

    def explain(self, exc: sqlite3.DatabaseError) -> Exception:
        if is_damage(exc):
            return damaged(self.path, str(exc))
        if is_read_only(exc):
            return read_only(self.path.parent, str(exc))
        return exc

    @property
    def in_transaction(self) -> bool:
        return self._con.in_transaction

    def close(self) -> None:
        self._con.close()


class Cursor:
    """The rows of one statement; a damaged page met while fetching them is explained like ``execute``'s."""

    def __init__(self, cursor: sqlite3.Cursor, con: Connection) -> None:
        self._cursor = cursor
        self._con = con

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    def fetchone(self):
        try:
            return self._cursor.fetchone()
        except sqlite3.DatabaseError as exc:
            raise self._con.explain(exc) from exc

    def fetchall(self) -> list:
        try:
            return self._cursor.fetchall()
        except sqlite3.DatabaseError as exc:
            raise self._con.explain(exc) from exc

    def __iter__(self):
        while (row := self.fetchone()) is not None:
            yield row


def truncation(path: Path) -> str | None:
    """Why the file is cut short, from its 100-byte header (None when its length is what the header says).
    SQLite itself reads the missing end of a short page as zeros: embeddings would silently be wrong."""
    size = path.stat().st_size
    if size == 0:
        return "the file is empty, 0 bytes"
    wal = path.with_name(path.name + "-wal")
    if wal.is_file() and wal.stat().st_size > 0:
        return None  # a writer is at work (or was killed): the file may be mid-checkpoint; SQLite knows best
    with open(path, "rb") as f:
        head = f.read(100)
    if len(head) < 100 or not head.startswith(b"SQLite format 3\x00"):
        return None  # not an SQLite header at all: SQLite's own error names it
    page = int.from_bytes(head[16:18], "big")
    page = 65536 if page == 1 else page
    pages = int.from_bytes(head[28:32], "big")
    header_valid = head[92:96] == head[24:28]  # the page count is kept up to date
    if page >= 512 and size % page:
        return f"the file is truncated: {size} bytes, not a whole number of {page}-byte pages"
    if page >= 512 and header_valid and pages and size < pages * page:
        return f"the file is truncated: {size} bytes, its header says {pages * page}"
    return None


def connect(path: Path, readonly: bool = False) -> Connection:
    """A connection with WAL, foreign keys and a busy timeout (a writer's commit never fails a reader).

    ``readonly``: for readers, opened without write access (``mode=ro``), so a library on a read-only folder or
    with read-only files is fully usable for list, query and report; where SQLite cannot even create its
    shared-memory file there (a read-only folder), the file is opened as immutable (no writer can change it).
    """
    path = Path(path)
    if path.is_file():
        why = truncation(path)
        if why:
            raise damaged(path, why)
    try:
        if readonly:
            con = _connect_read_only(path)
        else:
            con = sqlite3.connect(str(path), timeout=30.0, isolation_level=None, check_same_thread=False)
            con.execute("PRAGMA foreign_keys = ON")
            con.execute("PRAGMA busy_timeout = 30000")
            mode = con.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            con.execute("PRAGMA synchronous = FULL" if mode != "wal" else "PRAGMA synchronous = NORMAL")
    except sqlite3.DatabaseError as exc:
        if is_damage(exc):
            raise damaged(path, str(exc)) from exc
        if not readonly and is_read_only(exc):
            raise read_only(path.parent, str(exc)) from exc
        raise InputError(f"{path} is not a readable case library database ({exc}).") from exc
    return Connection(con, path)


def _connect_read_only(path: Path) -> sqlite3.Connection:
    uri = Path(os.path.abspath(path)).as_uri()
    last: sqlite3.DatabaseError | None = None
    for flags in ("mode=ro", "mode=ro&immutable=1"):
        con = sqlite3.connect(
            f"{uri}?{flags}", uri=True, timeout=30.0, isolation_level=None, check_same_thread=False
        )
        try:
            con.execute("PRAGMA busy_timeout = 30000")
            con.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            return con
        except sqlite3.DatabaseError as exc:
            con.close()
            if not is_read_only(exc):
                raise
            last = exc
    assert last is not None
    raise last


def create_schema(con: Connection) -> None:
    with transaction(con):
        for statement in filter(str.strip, SCHEMA.split(";")):
            con.execute(statement)
        if get_meta(con, "format_version") is None:
            set_meta(con, "format_version", FORMAT_VERSION)
            set_meta(con, "generation", 0)
            set_meta(con, "created_at", time.strftime("%Y-%m-%dT%H:%M:%S"))


@contextlib.contextmanager
def transaction(con: Connection, immediate: bool = True) -> Iterator[Connection]:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on any error): all or nothing."""
    con.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


@contextlib.contextmanager
def snapshot(con: Connection) -> Iterator[Connection]:
    """A read transaction: every SELECT inside sees the same committed state."""
    if con.in_transaction:
        yield con
        return
    con.execute("BEGIN")
    try:
        yield con
    finally:
        con.execute("COMMIT")


def get_meta(con: Connection, key: str, default: Any = None) -> Any:
    row = con.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return json.loads(row[0]) if row else default


def set_meta(con: Connection, key: str, value: Any) -> None:
    con.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value)))


def bump_generation(con: Connection) -> int:
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
    con: Connection,
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
    con: Connection, kind: str, rows: list[int] | None, dim: int
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
    con: Connection, rows: list[int], dim: int, scale: int
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


def _select_in(con: Connection, sql: str, rows: list[int], chunk: int = 500) -> list[tuple]:
    out: list[tuple] = []
    rows = [int(r) for r in rows]
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        out += con.execute(sql.format(",".join("?" * len(part))), part).fetchall()
    return out
