"""Similar-case retrieval: a case library (SQLite + FAISS), whole-volume and region queries, thumbnails.

- ``RetrievalPipeline`` (pipeline.py): the one implementation behind `voxelfm index` / `voxelfm query` and
  the Slicer logic; ``CaseLibrary`` (library.py): the library on disk (cases, reports, findings).
- Embeddings (embeddings.py): cls and mean-pooled patch tokens per case, patch tokens pooled over small blocks
  with their RAS centres for region queries; all L2-normalised, compared by inner product (cosine).
- Index (vector_index.py, index_set.py): exact for small libraries, IVF + 8-bit scalar quantisation above a
  measured size (Testing/Benchmarks/results/retrieval_index.md); files beside the SQLite file, rebuildable.

Public names are loaded lazily so that importing this package does not import torch or faiss.
"""

from __future__ import annotations

from ..lazy import lazy_exports

_EXPORTS = {
    ".pipeline": ("RetrievalPipeline",),
    ".library": ("CaseLibrary",),
    ".records": ("CaseSource", "CaseRecord"),
    ".embeddings": ("CaseEmbeddings",),
    ".config": ("RetrievalConfig",),
    ".vector_index": ("IndexPolicy",),
    ".result": ("QueryResult", "RetrievalHit"),
    ".regions": ("BoxRegion", "SphereRegion", "MaskRegion"),
    ".region_specs": ("parse_region_spec",),
    ".sources": ("expand_inputs",),
    ".indexing": ("AddReport",),
    ".lock": ("LibraryLockedError",),
    ".index_set": ("IndexDamagedError",),
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
