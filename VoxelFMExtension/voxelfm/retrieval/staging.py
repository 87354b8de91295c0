"""Computed-but-not-yet-merged cases: LIBRARY/staging/<key hash>.npz, one atomic file per case.

WHY: the expensive part of adding a case is its features; the cheap part is the SQLite insert. Each worker
(one process, or every torchrun rank) writes each finished case here atomically; the writer merges them into
the database (at once for one process, in one step at the end under torchrun). A killed run leaves complete
files only, which the next run merges instead of recomputing them.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..files.atomic import atomic_savez
from .embeddings import CaseEmbeddings
from .records import CaseSource

FOLDER = "staging"


@dataclass
class StagedCase:
    path: Path
    source: CaseSource
    embeddings: CaseEmbeddings
    identity: dict[str, Any]
    model_reference: str
    preprocess: dict[str, Any]
    info: dict[str, Any]
    content_sha256: str


def staging_folder(library: Path) -> Path:
    return Path(library) / FOLDER


def staged_path(library: Path, key: str) -> Path:
    return staging_folder(library) / f"{hashlib.sha1(key.encode()).hexdigest()}.npz"


def stage(library: Path, case: StagedCase) -> Path:
    s = case.source
    meta = {
        "key": s.key,
        "source": {
            "path": s.path,
            "case_id": s.case_id,
            "report": s.report,
            "findings": s.findings,
            "patient_id": s.patient_id,
            "study_uid": s.study_uid,
            "series_uid": s.series_uid,
        },
        "identity": case.identity,
        "model_reference": case.model_reference,
        "preprocess": case.preprocess,
        "info": case.info,
        "content_sha256": case.content_sha256,
        "block_mm": [float(b) for b in case.embeddings.block_mm],
        "tokens": int(case.embeddings.tokens),
    }
    e = case.embeddings
    scales = {f"blocks{i}": b.astype(np.float16) for i, b in enumerate(e.blocks)}
    scales.update({f"centres{i}": c.astype(np.float32) for i, c in enumerate(e.centres)})
    return atomic_savez(
        staged_path(library, s.key), cls=e.cls, mean=e.mean, meta=np.array(json.dumps(meta)), **scales
    )


def load_staged(path: Path) -> StagedCase:
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            n = len(meta["block_mm"])
            emb = CaseEmbeddings(
                cls=z["cls"].astype(np.float32),
                mean=z["mean"].astype(np.float32),
                blocks=[z[f"blocks{i}"].astype(np.float32) for i in range(n)],
                centres=[z[f"centres{i}"].astype(np.float32) for i in range(n)],
                block_mm=[float(b) for b in meta["block_mm"]],
                tokens=int(meta.get("tokens", 0)),
            )
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(f"Staged case {path} is unreadable ({exc}).") from exc
    src = meta["source"]
    source = CaseSource(
        path=src.get("path") or "",
        case_id=src.get("case_id") or "",
        report=src.get("report"),
        findings=src.get("findings"),
        patient_id=src.get("patient_id") or "",
        study_uid=src.get("study_uid") or "",
        series_uid=src.get("series_uid") or "",
        source_key=meta["key"],
    )
    return StagedCase(
        path,
        source,
        emb,
        meta["identity"],
        meta["model_reference"],
        meta["preprocess"],
        meta["info"],
        meta["content_sha256"],
    )


def staged_files(library: Path) -> list[Path]:
    folder = staging_folder(library)
    return sorted(folder.glob("*.npz")) if folder.is_dir() else []


def staged_keys(library: Path) -> dict[str, Path]:
    """key -> staged file, for complete staged files (unreadable ones are ignored: they are recomputed)."""
    out = {}
    for path in staged_files(library):
        try:
            out[load_staged(path).source.key] = path
        except InputError:
            continue
    return out


def discard(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
