"""Nearest cases of a query embedding in a library: index candidates + exact re-scoring from stored vectors.

The FAISS index only proposes candidates (4k of them, more when filters or stale entries remove some); every
candidate is re-scored exactly with its stored embedding, so reported scores are exact cosines whatever the
index kind, and cases added since the index file was last written are scored exactly too. Region queries
re-score all blocks of each candidate case and report the best block's centre as the location.

Whole-volume queries of a library with centring "library" (RetrievalConfig) are scored by the cosine after
subtracting the mean stored embedding of the library's cases (computed from the stored vectors at each query, so
it follows every add and remove); up to CENTRE_EXACT_MAX cases every case is scored exactly. Libraries of pooling
"body_standardised" store each case's token moments; a whole-volume query standardises them and the query with the
token statistics of the cases stored now (``standardisation``: read at each query, so add, remove and rebuild
need no refit) and scores the cosine of the standardised embeddings (standardise.py).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from . import store
from .config import region_kind
from .index_set import IndexFileMissingError, IndexSet, is_region, split_region_id
from .records import CaseRecord
from .result import RetrievalHit
from .standardise import MIN_CASES, Standardisation, fit
from .vector_index import normalise

Filter = Callable[[CaseRecord], bool] | None
OVERSAMPLE = 4
REGION_OVERSAMPLE = 64  # blocks fetched per wanted case before grouping by case
CENTRE_MIN_CASES = 3  # below this a library mean is mostly the cases themselves: plain cosine then
CENTRE_EXACT_MAX = 50_000  # a centred query scores every case up to this size (index candidates above)


def _retrying(fn):
    """Run ``fn`` in a read snapshot; once more if a writer replaced an index file meanwhile."""

    def run(lib, *args, **kwargs):
        for attempt in (0, 1):
            try:
                with store.snapshot(lib.con):
                    return fn(lib, *args, **kwargs)
            except IndexFileMissingError:
                if attempt:
                    raise
        raise AssertionError("unreachable")

    return run


def _block_mm(record: CaseRecord, scale: int) -> float | None:
    sizes = record.info.get("block_mm") or []
    return float(sizes[scale]) if scale < len(sizes) else None


def _live(lib, rows: list[int], where: Filter) -> dict[int, CaseRecord]:
    records = lib.records(rows)
    return {r: rec for r, rec in records.items() if where is None or where(rec)}


def _index_candidates(
    lib, indexes: IndexSet, kind: str, query: np.ndarray, want: int, where: Filter
) -> list[int]:
    """Live case rows the index proposes (best first), at least ``want`` of them when the index has them."""
    state, index = indexes.load(kind)
    if index is None or index.ntotal == 0:
        return []
    per_case = REGION_OVERSAMPLE if is_region(kind) else 1
    stale = len(indexes.removed_after(state.generation)) * per_case
    k = min(index.ntotal, want * OVERSAMPLE * per_case + stale)
    while True:
        _, ids = index.search(query, k)
        ids = ids[0][ids[0] >= 0]
        rows = split_region_id(ids)[0] if is_region(kind) else ids
        ordered = list(dict.fromkeys(int(r) for r in rows))
        live = _live(lib, ordered, where)
        found = [r for r in ordered if r in live]
        if len(found) >= want * OVERSAMPLE or k >= index.ntotal:
            return found
        k = min(index.ntotal, k * 4)


def _delta_rows(lib, indexes: IndexSet, kind: str, where: Filter) -> list[int]:
    state = indexes.state(kind)
    rows = indexes.rows_after(state.generation if state is not None else 0)
    return list(_live(lib, rows, where)) if where is not None else rows


def standardisation(lib, notes: list[str] | None) -> Standardisation:
    """The library's token statistics from the stored moments and token counts of every case (read at each
    query: they follow every add and remove); with one case a note says that nothing is removed."""
    counts = {rec.row: float(rec.info.get("tokens") or 1) for rec in lib.cases()}
    stats, n = fit(lambda: lib.indexes.vectors("mean", list(counts)), counts)
    if n < MIN_CASES and notes is not None:
        notes.append(
            f"The library holds {n} case: scores are cosines of its token statistics scaled, not standardised "
            f"(the library's token mean is removed from {MIN_CASES} cases on)."
        )
    return stats


def _as_scored(mat: np.ndarray, stats: Standardisation | None) -> np.ndarray:
    """The vectors a query is scored against: stored as they are, or standardised (unit rows)."""
    return mat if stats is None else stats.embed(mat)


def library_centre(lib, kind: str, stats: Standardisation | None = None) -> np.ndarray:
    """Mean of the stored ``kind`` embeddings (standardised with ``stats``) of every case (streamed in chunks;
    read at each query, so it always matches the library as it is now)."""
    total, n = None, 0
    for mat, _ in lib.indexes.vectors(kind, [rec.row for rec in lib.cases()]):
        part = _as_scored(mat, stats).sum(axis=0, dtype=np.float64)
        total = part if total is None else total + part
        n += len(mat)
    return (total if total is not None else np.zeros(int(lib.dim))) / max(n, 1)


def centred_cosines(mat: np.ndarray, q: np.ndarray, centre: np.ndarray | None) -> np.ndarray:
    """Cosine of each row of ``mat`` with ``q`` after subtracting ``centre`` from both (plain when None)."""
    if centre is None:
        return np.clip(mat @ q, -1.0, 1.0)
    xc, qc = mat - centre[None, :], q - centre
    norms = np.linalg.norm(xc, axis=1) * max(float(np.linalg.norm(qc)), 1e-12)
    return np.clip((xc @ qc) / np.maximum(norms, 1e-12), -1.0, 1.0)


def global_centre(
    lib, kind: str, centring: str, notes: list[str] | None, stats: Standardisation | None = None
) -> np.ndarray | None:
    """The library mean to remove (None: plain cosine, with a note when the library is too small)."""
    if centring != "library":
        return None
    n = lib.count()
    if n < CENTRE_MIN_CASES:
        if notes is not None:
            notes.append(
                f"The library holds {n} case(s): scores are plain cosines (the library mean is removed from "
                f"{CENTRE_MIN_CASES} cases on)."
            )
        return None
    return library_centre(lib, kind, stats)


@_retrying
def search_global(
    lib,
    vector: np.ndarray,
    kind: str,
    k: int,
    where: Filter = None,
    centring: str = "none",
    notes: list[str] | None = None,
    standardise: bool = False,
) -> list[RetrievalHit]:
    """The ``k`` cases whose ``kind`` (mean | cls) embedding is closest to ``vector`` (``centring``:
    "library" scores cosines after removing the library mean; ``standardise``: ``vector`` and the stored
    vectors are token moments, scored as standardised means; see the module note)."""
    indexes = lib.indexes
    stats = standardisation(lib, notes) if standardise else None
    q = normalise(vector) if stats is None else stats.embed(vector)
    centre = global_centre(lib, kind, centring, notes, stats)
    if (centre is not None or stats is not None) and lib.count() <= CENTRE_EXACT_MAX:
        rows = list(_live(lib, [rec.row for rec in lib.cases()], where))
    else:  # the index holds the stored vectors as they are: it only proposes candidates
        wide = centre is not None or stats is not None
        rows = _index_candidates(lib, indexes, kind, normalise(vector), 8 * k if wide else k, where)
        rows += [r for r in _delta_rows(lib, indexes, kind, where) if r not in set(rows)]
    scored: list[tuple[float, int]] = []
    for mat, ids in indexes.vectors(kind, rows):
        scores = centred_cosines(_as_scored(mat, stats), q[0], centre)
        scored += [(float(s), int(i)) for s, i in zip(scores, ids, strict=True)]
    scored.sort(key=lambda t: -t[0])
    top = scored[:k]
    records = lib.records([r for _, r in top])
    return [RetrievalHit(records[r], s) for s, r in top if r in records]


@_retrying
def search_region(lib, vector: np.ndarray, scale: int, k: int, where: Filter = None) -> list[RetrievalHit]:
    """The ``k`` cases holding the block (of block scale ``scale``) closest to ``vector``, each with that
    block's RAS centre."""
    indexes = lib.indexes
    kind = region_kind(scale)
    q = normalise(vector)[0]
    rows = _index_candidates(lib, indexes, kind, q[None], k, where)[: max(2 * k, k + 8)]
    rows += [r for r in _delta_rows(lib, indexes, kind, where) if r not in set(rows)]
    best: list[tuple[float, int, np.ndarray]] = []
    dim = int(lib.dim)
    for start in range(0, len(rows), 200):
        for row, (vectors, centres) in store.region_blocks(
            lib.con, rows[start : start + 200], dim, scale
        ).items():
            scores = vectors @ q
            b = int(np.argmax(scores))
            best.append((float(scores[b]), row, centres[b].astype(np.float64)))
    best.sort(key=lambda t: -t[0])
    top = best[:k]
    records = lib.records([r for _, r, _ in top])
    return [
        RetrievalHit(records[r], s, ras=c, block_mm=_block_mm(records[r], scale))
        for s, r, c in top
        if r in records
    ]
