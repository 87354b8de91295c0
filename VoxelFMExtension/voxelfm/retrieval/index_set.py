"""The library's FAISS index files, kept in step with its SQLite file.

Indexes: ``mean`` and ``cls`` (one vector per case, id = case row) and ``region<s>`` for each block scale s
(one vector per block, id = row << 24 | block). Each is saved as LIBRARY/<kind>.<generation>.faiss; the meta row ``index.<kind>``
names the current file, its sha256, vector count and the library generation it reflects. A new file is
written first, then the meta row is committed, then the old file is deleted, so a kill at any moment leaves a
complete, named index. An index behind the database (a writer killed before updating it) is still correct
to use: cases added since are searched exactly, removed ones are filtered out, and the next writer catches
the file up. A file that is missing or fails its checks is reported with the command that rebuilds it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InputError
from ..files.integrity import sha256_of
from ..progress import ProgressFn, no_progress
from . import store
from .config import REGION, region_kind
from .vector_index import VectorIndex

if TYPE_CHECKING:
    from .library import CaseLibrary

log = logging.getLogger(__name__)

GLOBAL = ("mean", "cls")
REGION_SHIFT = 24  # region id = case row << 24 | block index (up to 16M blocks per case)
CHUNK_ROWS = 2000


class IndexDamagedError(InputError):
    """An index file is missing, unreadable or not the one the library recorded."""


class IndexFileMissingError(IndexDamagedError):
    """The recorded index file is not there (e.g. a writer replaced it between reading its row and the file)."""


@dataclass(frozen=True)
class IndexState:
    file: str
    sha256: str
    generation: int
    kind: str
    nprobe: int
    ntotal: int


def region_ids(row: int, n: int) -> np.ndarray:
    return (np.int64(row) << REGION_SHIFT) | np.arange(n, dtype=np.int64)


def split_region_id(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ids = np.asarray(ids, dtype=np.int64)
    return ids >> REGION_SHIFT, ids & ((1 << REGION_SHIFT) - 1)


def is_region(kind: str) -> bool:
    return kind.startswith(REGION)


class IndexSet:
    def __init__(self, library: CaseLibrary) -> None:
        self.lib = library
        self._loaded: dict[str, tuple[IndexState, VectorIndex]] = {}
        self._left: set[str] = set()  # superseded files that could not be deleted (reported once per update)

    @property
    def kinds(self) -> tuple[str, ...]:
        return GLOBAL + tuple(region_kind(s) for s in range(len(self.lib.config.block_mm)))

    # ---- state and loading

    def state(self, kind: str) -> IndexState | None:
        raw = store.get_meta(self.lib.con, f"index.{kind}")
        return IndexState(**raw) if raw else None

    def _damaged(
        self, kind: str, why: str, error: type[IndexDamagedError] = IndexDamagedError
    ) -> IndexDamagedError:
        return error(
            f"The {kind} index of the case library {self.lib.folder} is damaged ({why}). Run `voxelfm index "
            f"rebuild {self.lib.folder}` to rebuild it from the stored embeddings (no case is lost)."
        )

    def load(
        self, kind: str, state: IndexState | None = None
    ) -> tuple[IndexState | None, VectorIndex | None]:
        """The current index of ``kind`` (None if never built), verified against its meta row."""
        state = state or self.state(kind)
        if state is None:
            return None, None
        cached = self._loaded.get(kind)
        if cached is not None and cached[0] == state:
            return cached
        path = self.lib.folder / state.file
        if not path.is_file():
            raise self._damaged(kind, f"{state.file} is missing", IndexFileMissingError)
        if sha256_of(path) != state.sha256:
            raise self._damaged(kind, f"{state.file} does not match its recorded sha256")
        try:
            index = VectorIndex.load(path, state.kind, state.nprobe, int(self.lib.dim or 0))
        except InputError as exc:
            raise self._damaged(kind, str(exc)) from exc
        if index.ntotal != state.ntotal:
            raise self._damaged(
                kind, f"{state.file} holds {index.ntotal} vectors, {state.ntotal} were recorded"
            )
        self._loaded[kind] = (state, index)
        return state, index

    def check(self) -> list[str]:
        """Problems of every index file (empty when all load)."""
        problems = []
        for kind in self.kinds:
            try:
                self.load(kind)
            except IndexDamagedError as exc:
                problems.append(str(exc))
        return problems

    # ---- rows and vectors

    def rows_after(self, generation: int) -> list[int]:
        q = "SELECT id FROM cases WHERE generation > ? ORDER BY id"
        return [int(r[0]) for r in self.lib.con.execute(q, (generation,))]

    def removed_after(self, generation: int) -> list[int]:
        q = "SELECT row FROM removed WHERE generation > ?"
        return [int(r[0]) for r in self.lib.con.execute(q, (generation,))]

    def vectors(self, kind: str, rows: list[int]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(vectors, ids) chunks of ``kind`` for ``rows``."""
        dim = int(self.lib.dim or 0)
        for start in range(0, len(rows), CHUNK_ROWS):
            part = rows[start : start + CHUNK_ROWS]
            if is_region(kind):
                blocks = store.region_blocks(self.lib.con, part, dim, int(kind[len(REGION) :]))
                if blocks:
                    yield (
                        np.concatenate([v for v, _ in blocks.values()]),
                        np.concatenate([region_ids(r, len(v)) for r, (v, _) in blocks.items()]),
                    )
            else:
                ids, mat = store.global_matrix(self.lib.con, kind, part, dim)
                if len(ids):
                    yield mat, ids

    def vector_count(self, kind: str) -> int:
        if is_region(kind):
            q = "SELECT COALESCE(SUM(n), 0) FROM regions WHERE scale = ?"
            return int(self.lib.con.execute(q, (int(kind[len(REGION) :]),)).fetchone()[0])
        return self.lib.count()

    # ---- writing (writer only)

    def update(self, rebuild: bool = False, progress: ProgressFn | None = None) -> None:
        """Bring the index files up to the database (incrementally, or from scratch with ``rebuild``)."""
        self.lib._need_writer()
        progress = progress or no_progress
        if self.lib.dim is None:
            return
        kinds = self.kinds
        for n, kind in enumerate(kinds):
            progress(n / len(kinds), f"updating the {kind} index")
            self._update_one(kind, rebuild)
        self._purge_removed()
        self._delete_orphans()
        if self._left:
            log.warning(
                "Could not delete the old index file(s) %s in %s: left in place (unused), deleted by a later "
                "update of the library once they can be.",
                ", ".join(sorted(self._left)),
                self.lib.folder,
            )
            self._left.clear()
        progress(1.0, "indexes up to date")

    def rebuild(self, progress: ProgressFn | None = None) -> None:
        self.update(rebuild=True, progress=progress)

    def _update_one(self, kind: str, rebuild: bool) -> None:
        generation = self.lib.generation
        state = None if rebuild else self.state(kind)
        n = self.vector_count(kind)
        policy = self.lib.policy
        if state is not None and state.generation == generation:
            return
        index = None
        if state is not None and policy.kind_for(n) == state.kind:
            _, index = self.load(kind, state)  # a damaged file stops here: the user is told to rebuild
        if index is None:
            rows = sorted(int(r[0]) for r in self.lib.con.execute("SELECT id FROM cases"))
            np.random.default_rng(0).shuffle(rows)  # a random training sample for IVF
            index = VectorIndex.build(self.lib.dim, self.vectors(kind, list(rows)), n, policy)
        else:
            for row in self.removed_after(state.generation):
                if is_region(kind):
                    index.remove(id_range=(row << REGION_SHIFT, (row + 1) << REGION_SHIFT))
                else:
                    index.remove(np.array([row]))
            for vectors, ids in self.vectors(kind, self.rows_after(state.generation)):
                index.add(vectors, ids)
        self._save(kind, index, generation)

    def _save(self, kind: str, index: VectorIndex, generation: int) -> None:
        old = self.state(kind)
        name = f"{kind}.{generation:08d}.faiss"
        path = index.save(self.lib.folder / name)
        new = IndexState(name, sha256_of(path), generation, index.kind, index.nprobe, index.ntotal)
        with store.transaction(self.lib.con):
            store.set_meta(self.lib.con, f"index.{kind}", asdict(new))
        self._loaded[kind] = (new, index)
        if old is not None and old.file != name:
            _unlink(self.lib.folder / old.file, self._left)
        log.debug("saved %s index %s (%s, %d vectors)", kind, name, index.kind, index.ntotal)

    def _purge_removed(self) -> None:
        states = [self.state(k) for k in self.kinds]
        if any(s is None for s in states):
            return
        oldest = min(s.generation for s in states)  # type: ignore[union-attr]
        with store.transaction(self.lib.con):
            self.lib.con.execute("DELETE FROM removed WHERE generation <= ?", (oldest,))

    def _delete_orphans(self) -> None:
        """Index files no meta row names (left by a writer killed between writing and committing)."""
        named = {s.file for s in (self.state(k) for k in self.kinds) if s is not None}
        for path in self.lib.folder.glob("*.faiss"):
            if path.name not in named:
                _unlink(path, self._left)


def _unlink(path: Path, left: set[str]) -> None:
    """Delete a superseded index file: housekeeping after the new one is committed, so a file that cannot be
    deleted (read-only or immutable) is only noted in ``left``, never failing the change the user asked for;
    the next update deletes it as an orphan."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        left.add(f"{path.name} ({exc.strerror or exc})")
