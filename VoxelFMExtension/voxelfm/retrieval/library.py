"""A case library on disk: LIBRARY/library.sqlite (cases + embeddings) and the FAISS index files beside it.

    with CaseLibrary.open("cases/", create=True, writer=True) as lib:   # takes the writer lock
        lib.add_case(source, embeddings, identity=..., info=...)
    with CaseLibrary.open("cases/") as lib:                              # readers need no lock
        lib.cases(); lib.report("case-12"); lib.findings("case-12")

Every change is one SQLite transaction; the index files are brought up to date after it (``IndexSet``) and a
reader merges what they lack, so a query always answers from exactly the committed cases. One writer at a
time (``WriterLock``); embeddings of another backbone, dimension, preprocessing or pooling are refused.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..features.identity import backbone_record, check_backbone
from ..files.documents import check_report_text
from . import store
from .config import RetrievalConfig
from .embeddings import CaseEmbeddings
from .index_set import IndexSet
from .lock import WriterLock
from .records import CaseRecord, CaseSource, check_findings
from .recover import recover_database
from .vector_index import IndexPolicy

log = logging.getLogger(__name__)

DB_NAME = "library.sqlite"


class NoLibraryError(InputError):
    """The folder holds no case library (yet): a front end may offer to create one on the first add."""


def recover_damaged(folder: str | Path):
    """Recover a damaged library.sqlite under the writer lock (``recover.recover_database``); its report."""
    folder = Path(folder)
    _check_writable_folder(folder)
    try:
        lock = WriterLock(folder).acquire()
    except PermissionError as exc:
        raise store.read_only(folder, f"cannot open {folder / 'write.lock'}: {exc.strerror}") from exc
    try:
        return recover_database(folder / DB_NAME)
    finally:
        lock.release()


def _check_writable_folder(folder: Path) -> None:
    """A writer creates files in the folder (the lock, index files): refuse at once where it cannot (a
    read-only mount, chattr +i, no permission; root ignores permission bits, so this tries)."""
    probe = folder if folder.is_dir() else next((p for p in folder.parents if p.exists()), folder.parent)
    try:
        fd, name = tempfile.mkstemp(prefix=".voxelfm-write-test.", dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise store.read_only(folder, f"cannot create files in {probe}: {exc.strerror or exc}") from exc


def _check_writable_database(con: store.Connection) -> None:
    """A write that changes nothing, rolled back: a read-only library.sqlite fails here, before any work."""
    con.execute("BEGIN IMMEDIATE")
    try:
        con.execute("UPDATE meta SET value = value WHERE key = 'format_version'")
    finally:
        con.execute("ROLLBACK")


class CaseLibrary:
    def __init__(self, folder: Path, con: store.Connection, lock: WriterLock | None) -> None:
        self.folder = folder
        self.con = con
        self.lock = lock
        self._indexes = None

    # ---- opening

    @classmethod
    def open(cls, folder: str | Path, create: bool = False, writer: bool = False) -> CaseLibrary:
        """Open (or with ``create`` make) the library in ``folder``; ``writer`` takes the writer lock."""
        folder = Path(folder)
        db = folder / DB_NAME
        if folder.exists() and not folder.is_dir():
            raise InputError(f"{folder} is a file; a case library is a folder (it holds {DB_NAME}).")
        if not db.is_file():
            if not create:
                raise NoLibraryError(
                    f"No case library at {folder} (no {DB_NAME}); create one with `voxelfm index add {folder} "
                    "IMAGE...`."
                )
            if folder.is_dir() and any(folder.iterdir()):
                raise InputError(
                    f"{folder} is a folder with other files but no {DB_NAME}; choose a new or empty folder for "
                    "the case library (its files are never touched)."
                )
            folder.mkdir(parents=True, exist_ok=True)
        if db.is_file() and (why := store.truncation(db)):
            raise store.damaged(db, why)
        if writer:
            _check_writable_folder(folder)
        try:
            lock = WriterLock(folder).acquire() if writer else None
        except PermissionError as exc:
            raise store.read_only(folder, f"cannot open {folder / 'write.lock'}: {exc.strerror}") from exc
        try:
            con = store.connect(db, readonly=not writer)
            if writer and create:
                store.create_schema(con)
            cls._check_format(con, db)
            if writer:
                _check_writable_database(con)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        return cls(folder, con, lock)

    @staticmethod
    def _check_format(con: store.Connection, db: Path) -> None:
        try:
            version = store.get_meta(con, "format_version")
            con.execute("SELECT COUNT(*) FROM cases").fetchone()
        except sqlite3.DatabaseError as exc:
            raise InputError(f"{db} is not a VoxelFM case library ({exc}).") from exc
        if version is None:
            raise store.damaged(db, "it records no library format version")
        if int(version) > store.FORMAT_VERSION:
            raise InputError(
                f"{db} was written by a newer VoxelFM (library format {version}); update VoxelFM to read it."
            )

    def close(self) -> None:
        self.con.close()
        if self.lock is not None:
            self.lock.release()

    def __enter__(self) -> CaseLibrary:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def writable(self) -> bool:
        return self.lock is not None and self.lock.held

    def _need_writer(self) -> None:
        if not self.writable:
            raise InputError("The library was opened read-only; open it with writer=True to change it.")

    # ---- what the library holds

    def meta(self, key: str, default: Any = None) -> Any:
        return store.get_meta(self.con, key, default)

    @property
    def generation(self) -> int:
        return int(self.meta("generation", 0))

    @property
    def identity(self) -> dict[str, Any] | None:
        return self.meta("backbone")

    @property
    def dim(self) -> int | None:
        dim = self.meta("dim")
        return int(dim) if dim is not None else None

    @property
    def model_reference(self) -> str:
        return str(self.meta("model_reference", "") or "")

    @property
    def config(self) -> RetrievalConfig:
        return RetrievalConfig.from_dict(self.meta("config", {}))

    @property
    def preprocess(self) -> dict[str, Any]:
        return dict(self.meta("preprocess", {}) or {})

    @property
    def policy(self) -> IndexPolicy:
        return IndexPolicy.from_dict(self.meta("policy", {}))

    def count(self) -> int:
        return int(self.con.execute("SELECT COUNT(*) FROM cases").fetchone()[0])

    def cases(self) -> list[CaseRecord]:
        rows = self.con.execute(f"SELECT {store.CASE_COLUMNS} FROM cases ORDER BY id").fetchall()
        return [store.record_from_row(r) for r in rows]

    def records(self, rows: list[int]) -> dict[int, CaseRecord]:
        got = store._select_in(self.con, f"SELECT {store.CASE_COLUMNS} FROM cases WHERE id IN ({{}})", rows)
        return {int(r[0]): store.record_from_row(r) for r in got}

    def case(self, case_id: str) -> CaseRecord:
        row = self.con.execute(
            f"SELECT {store.CASE_COLUMNS} FROM cases WHERE case_id = ?", (case_id,)
        ).fetchone()
        if row is None:
            hint = ", ".join(r.case_id for r in self.cases()[:8]) or "the library is empty"
            raise InputError(
                f"No case '{case_id}' in the library {self.folder} (cases: {hint}); see `voxelfm index list`."
            )
        return store.record_from_row(row)

    def case_by_source(self, key: str) -> CaseRecord:
        row = self.con.execute(
            f"SELECT {store.CASE_COLUMNS} FROM cases WHERE source_key = ?", (key,)
        ).fetchone()
        if row is None:
            raise InputError(f"No case from {key} in the library {self.folder}.")
        return store.record_from_row(row)

    def done_sources(self) -> set[str]:
        return {r[0] for r in self.con.execute("SELECT source_key FROM cases")}

    def report(self, case_id: str) -> str | None:
        """The report text stored with a case (None when it has none)."""
        return self.case(case_id).report

    def findings(self, case_id: str) -> Any:
        """The findings JSON stored with a case (None when it has none)."""
        return self.case(case_id).findings

    # ---- compatibility

    def check_compatible(
        self, identity: dict[str, Any], dim: int, preprocess: dict[str, Any], config: RetrievalConfig
    ) -> None:
        """InputError unless embeddings made this way may join this library."""
        have = self.identity
        if have is None:
            return
        check_backbone(
            have,
            identity,
            f"The library {self.folder} holds embeddings of backbone",
            f"use --model {self.model_reference or have.get('id')} (the library's model) or a new library "
            "folder for this model.",
        )
        if int(dim) != self.dim:
            raise InputError(f"The library {self.folder} holds {self.dim}-d embeddings, not {dim}-d ones.")
        if json.dumps(preprocess, sort_keys=True) != json.dumps(self.preprocess, sort_keys=True):
            raise InputError(
                f"The library {self.folder} was built with other preprocessing ({self.preprocess}); "
                "use the same options (e.g. --crop-background, --max-patches) or a new library."
            )
        if config != self.config:
            raise InputError(
                f"The library {self.folder} was built with other embedding settings ({self.config}); use the "
                f"same --feature-spacing or a new library."
            )

    def _initialise(
        self,
        identity: dict[str, Any],
        model_reference: str,
        dim: int,
        preprocess: dict,
        config: RetrievalConfig,
    ) -> None:
        store.set_meta(self.con, "backbone", backbone_record(identity))
        store.set_meta(self.con, "model_reference", model_reference)
        store.set_meta(self.con, "dim", int(dim))
        store.set_meta(self.con, "preprocess", preprocess)
        store.set_meta(self.con, "config", config.to_dict())
        if store.get_meta(self.con, "policy") is None:
            store.set_meta(self.con, "policy", IndexPolicy().to_dict())

    def set_policy(self, policy: IndexPolicy) -> None:
        """Change when the compressed index is used (takes effect at the next index update or rebuild)."""
        self._need_writer()
        with store.transaction(self.con):
            store.set_meta(self.con, "policy", policy.to_dict())

    # ---- changes (writer only)

    def _unique_id(self, source: CaseSource) -> str:
        wanted = source.wanted_ids()
        for cid in wanted:
            if self.con.execute("SELECT 1 FROM cases WHERE case_id = ?", (cid,)).fetchone() is None:
                return cid
        if source.case_id:
            raise InputError(f"Case id '{source.case_id}' is already used in the library {self.folder}.")
        n = 2
        while self.con.execute("SELECT 1 FROM cases WHERE case_id = ?", (f"{wanted[-1]}-{n}",)).fetchone():
            n += 1
        return f"{wanted[-1]}-{n}"

    def add_case(
        self,
        source: CaseSource,
        emb: CaseEmbeddings,
        identity: dict[str, Any],
        model_reference: str = "",
        preprocess: dict[str, Any] | None = None,
        config: RetrievalConfig | None = None,
        info: dict[str, Any] | None = None,
        content_sha256: str = "",
    ) -> CaseRecord | None:
        """Add one case in one transaction; None when its source is already in the library (resume)."""
        self._need_writer()
        if source.report is not None:
            check_report_text(source.report, f"The report of {source.display}")
        preprocess, config = preprocess or {}, config or RetrievalConfig()
        with store.transaction(self.con):
            if self.con.execute("SELECT 1 FROM cases WHERE source_key = ?", (source.key,)).fetchone():
                return None
            if self.identity is None:
                self._initialise(identity, model_reference, emb.dim, preprocess, config)
            self.check_compatible(identity, emb.dim, preprocess, config)
            emb.check(self.dim, len(self.config.block_mm))
            case_id = self._unique_id(source)
            generation = store.bump_generation(self.con)
            info = {
                **(info or {}),
                "blocks": [int(len(b)) for b in emb.blocks],
                "block_mm": [round(float(b), 3) for b in emb.block_mm],
                **({"tokens": int(emb.tokens)} if emb.tokens else {}),
            }
            row = store.insert_case(self.con, source, case_id, emb, info, content_sha256, generation)
        return self.records([row])[row]

    def remove_case(self, case_id: str) -> CaseRecord:
        """Remove a case and its embeddings (its files are never touched); InputError for an unknown id."""
        self._need_writer()
        record = self.case(case_id)
        with store.transaction(self.con):
            generation = store.bump_generation(self.con)
            self.con.execute("DELETE FROM cases WHERE id = ?", (record.row,))
            self.con.execute(
                "INSERT OR REPLACE INTO removed (row, generation) VALUES (?, ?)", (record.row, generation)
            )
        return record

    def set_report(self, case_id: str, report: str | None = None, findings: Any = None) -> CaseRecord:
        """Attach (or replace) a case's report text and findings JSON."""
        self._need_writer()
        record = self.case(case_id)
        if report is not None:
            check_report_text(report, f"The report of case {case_id}")
        check_findings(findings)
        with store.transaction(self.con):
            self.con.execute(
                "UPDATE cases SET report = ?, findings = ? WHERE id = ?",
                (report, json.dumps(findings) if findings is not None else None, record.row),
            )
        return self.case(case_id)

    # ---- the FAISS indexes

    @property
    def indexes(self):
        """The index files of this library (loaded lazily, kept in step with the database)."""
        if self._indexes is None:
            self._indexes = IndexSet(self)
        return self._indexes
