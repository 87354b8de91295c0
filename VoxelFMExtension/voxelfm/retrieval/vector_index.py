"""A FAISS index of L2-normalised vectors (inner product = cosine): exact when small, IVF + 8-bit SQ when large.

WHY these two (Testing/Benchmarks/bench_retrieval_index.py, results/retrieval_index.md, 2 CPU cores, 864-d):
exact search costs one pass over all vectors per query, 1 ms at 5k but 24 ms at 20k and 330 ms at 1M here
(memory-bound), so the library switches at ``exact_max`` = 10k vectors. ``IVF4096,SQ8`` with nprobe 32 answered
a query over 1M vectors in 2.5 ms (p95 2.9 ms) with Recall@10 0.985 against exact search and an 886 MB index
(8 bits per dimension). SQ4 halved the size but reached Recall@10 0.89; PQ108 0.68; HNSW32,SQ8 reached 0.96 at
100k only with efSearch 128, is larger (codes + links: over 1 GB at 1M) and cannot remove vectors. Both kinds
kept here add and remove by 64-bit id, so the library updates its index files incrementally.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..files.atomic import atomic_write
from .faiss_import import import_faiss

EXACT, IVF_SQ8 = "exact", "ivf-sq8"
KINDS = (EXACT, IVF_SQ8)


def _faiss():
    return import_faiss()


@dataclass(frozen=True)
class IndexPolicy:
    """When to switch to the compressed index and how to size and probe it (see the module docstring)."""

    exact_max: int = 10_000  # vectors; above this the library builds IVF-SQ8
    nprobe: int = 32  # IVF lists visited per query
    points_per_list: int = 64  # nlist ~ n / points_per_list, a power of two ...
    max_nlist: int = 4096  # ... at most this many
    train_per_list: int = 50  # training sample = train_per_list * nlist vectors (k-means)
    kind: str = "auto"  # auto | exact | ivf-sq8 (force one kind, e.g. in tests)

    def kind_for(self, n: int) -> str:
        if self.kind != "auto":
            return self.kind
        return EXACT if n <= self.exact_max else IVF_SQ8

    def nlist_for(self, n: int) -> int:
        target = max(1, n // self.points_per_list)
        return int(min(self.max_nlist, max(16, 2 ** round(math.log2(target)))))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IndexPolicy:
        return cls(**{k: v for k, v in (d or {}).items() if k in cls.__dataclass_fields__})


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32, C-contiguous); zero rows stay zero."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim == 1:
        x = x[None]
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


class VectorIndex:
    """One FAISS index with 64-bit ids; ``kind`` is EXACT or IVF_SQ8."""

    def __init__(self, index: Any, kind: str, nprobe: int = 32) -> None:
        if kind not in KINDS:
            raise InputError(f"Unknown index kind {kind!r}; use one of {KINDS}.")
        self.index = index
        self.kind = kind
        self.nprobe = int(nprobe)

    # ---- construction

    @classmethod
    def exact(cls, dim: int) -> VectorIndex:
        faiss = _faiss()
        return cls(faiss.index_factory(int(dim), "IDMap2,Flat", faiss.METRIC_INNER_PRODUCT), EXACT)

    @classmethod
    def trained_ivf(cls, sample: np.ndarray, nlist: int, nprobe: int) -> VectorIndex:
        """IVF-SQ8 trained on ``sample`` (k-means for the lists, per-dimension ranges for the 8-bit codes)."""
        faiss = _faiss()
        x = normalise(sample)
        index = faiss.index_factory(x.shape[1], f"IVF{int(nlist)},SQ8", faiss.METRIC_INNER_PRODUCT)
        index.train(x)
        return cls(index, IVF_SQ8, nprobe)

    @classmethod
    def build(
        cls, dim: int, chunks: Iterable[tuple[np.ndarray, np.ndarray]], n: int, policy: IndexPolicy
    ) -> VectorIndex:
        """An index of the kind ``policy`` picks for ``n`` vectors, filled from (vectors, ids) chunks.

        For IVF the first chunks (up to the training sample size) are held back, trained on, then added.
        """
        kind = policy.kind_for(n)
        if kind == EXACT:
            out = cls.exact(dim)
            for vectors, ids in chunks:
                out.add(vectors, ids)
            return out
        nlist = policy.nlist_for(n)
        want = max(nlist * policy.train_per_list, nlist)
        held: list[tuple[np.ndarray, np.ndarray]] = []
        it = iter(chunks)
        for vectors, ids in it:
            held.append((vectors, ids))
            if sum(len(v) for v, _ in held) >= want:
                break
        sample = np.concatenate([v for v, _ in held]) if held else np.zeros((0, dim), np.float32)
        if len(sample) < nlist:
            nlist = max(1, 2 ** int(math.log2(max(1, len(sample)))))
        if len(sample) == 0:
            return cls.exact(dim)
        out = cls.trained_ivf(sample[:want], nlist, policy.nprobe)
        for vectors, ids in held:
            out.add(vectors, ids)
        for vectors, ids in it:
            out.add(vectors, ids)
        return out

    # ---- contents

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        x = normalise(vectors)
        if x.shape[0] == 0:
            return
        if x.shape[1] != self.dim:
            raise InputError(f"Embeddings have dimension {x.shape[1]}, the index holds {self.dim}.")
        self.index.add_with_ids(x, np.ascontiguousarray(ids, dtype=np.int64))

    def remove(self, ids: np.ndarray | None = None, id_range: tuple[int, int] | None = None) -> int:
        """Remove vectors by id (an array) or by an id range [lo, hi); returns how many were removed."""
        faiss = _faiss()
        if id_range is not None:
            selector = faiss.IDSelectorRange(int(id_range[0]), int(id_range[1]))
        else:
            arr = np.ascontiguousarray(ids if ids is not None else [], dtype=np.int64)
            if arr.size == 0:
                return 0
            selector = faiss.IDSelectorBatch(arr.size, faiss.swig_ptr(arr))
        return int(self.index.remove_ids(selector))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores [nq, k], ids [nq, k]) best first; missing results have id -1."""
        q = normalise(queries)
        if q.shape[1] != self.dim:
            raise InputError(f"The query embedding has dimension {q.shape[1]}, the index holds {self.dim}.")
        k = max(1, min(int(k), max(1, self.ntotal)))
        if self.kind == IVF_SQ8:
            self.index.nprobe = self.nprobe
        scores, ids = self.index.search(q, k)
        return scores, ids

    # ---- files

    def save(self, path: Path) -> Path:
        faiss = _faiss()
        return atomic_write(Path(path), lambda tmp: faiss.write_index(self.index, str(tmp)), fsync=True)

    @classmethod
    def load(cls, path: Path, kind: str, nprobe: int, dim: int) -> VectorIndex:
        """Read an index file; InputError (never a crash) when it is unreadable or not what was recorded."""
        faiss = _faiss()
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
            raise InputError(f"cannot read {path.name} ({detail[:200]})") from exc
        if int(index.d) != int(dim):
            raise InputError(f"{path.name} holds {index.d}-d vectors, the library {dim}-d")
        return cls(index, kind, nprobe)

    def nbytes(self) -> int:
        """Serialized size in bytes (what the file on disk holds)."""
        return int(_faiss().serialize_index(self.index).nbytes)
