"""The case libraries a server offers, named by id (`voxelfm serve --libraries FILE`).

FILE is a JSON object {"chest-2024": "/data/libraries/chest", ...}; relative folders are read from FILE's own
folder. Clients name a library only by its id, and a case by its id: a request never carries a server path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from ..client.analysis_payloads import LIBRARY_ID_RE
from ..errors import InputError
from ..files.documents import read_mapping
from ..imaging.io import read_volume
from ..imaging.volume import Volume
from ..retrieval.library import CaseLibrary
from ..retrieval.records import CaseRecord, clean_id


def read_libraries(path: Path | None) -> dict[str, Path]:
    """id -> library folder (InputError for a bad file or id); {} without a file."""
    if path is None:
        return {}
    raw = read_mapping(path, InputError, "libraries file", 'write a JSON object {"ID": "FOLDER", ...}')
    out: dict[str, Path] = {}
    for key, folder in raw.items():
        if not LIBRARY_ID_RE.match(str(key)):
            raise InputError(
                f"{path}: library id {key!r} must be letters, digits, '_', '.', '-' (at most 64)."
            )
        if not isinstance(folder, str) or not folder:
            raise InputError(f"{path}: library {key!r} needs a folder (a text).")
        where = Path(folder).expanduser()
        out[str(key)] = where if where.is_absolute() else (path.parent / where).resolve()
    return out


def library_folder(libraries: dict[str, Path], library_id: str) -> Path:
    """The folder of a library id; InputError naming the ids this server offers."""
    if library_id not in libraries:
        offered = ", ".join(sorted(libraries)) or "none (start it with --libraries FILE)"
        raise InputError(f"this server has no case library {library_id!r}; it offers: {offered}.")
    return libraries[library_id]


class CaseRow(BaseModel):
    case_id: str
    path: str
    patient_id: str
    study_uid: str
    series_uid: str
    added_at: str
    has_report: bool


class LibraryListing(BaseModel):
    library: str
    model: str = Field(description="the library's backbone id")
    dim: int = Field(description="embedding size (0 while empty)")
    cases: list[CaseRow]


def library_listing(libraries: dict[str, Path], library_id: str) -> LibraryListing:
    """The cases of a library (what `voxelfm index list` shows); an absent folder is an empty library."""
    folder = library_folder(libraries, library_id)
    if not (folder / "library.sqlite").is_file():
        return LibraryListing(library=library_id, model="", dim=0, cases=[])
    with CaseLibrary.open(folder) as lib:
        rows = [
            CaseRow(
                **{k: getattr(c, k) for k in CaseRow.model_fields if k != "has_report"},
                has_report=c.has_report,
            )
            for c in lib.cases()
        ]
        return LibraryListing(
            library=library_id,
            model=str((lib.identity or {}).get("id", "")),
            dim=int(lib.dim or 0),
            cases=rows,
        )


def library_case(libraries: dict[str, Path], library_id: str, case_id: str) -> CaseRecord:
    """The record of case ``case_id`` of library ``library_id``; InputError naming the library."""
    folder = library_folder(libraries, library_id)
    unknown = InputError(
        f"the case library {library_id!r} of this server has no case {case_id!r}; GET /libraries/{library_id} "
        "lists its cases."
    )
    if clean_id(case_id) != case_id or not (folder / "library.sqlite").is_file():
        raise unknown
    with CaseLibrary.open(folder) as lib:
        try:
            return lib.case(case_id)
        except InputError:
            raise unknown from None


def case_image(record: CaseRecord, library_id: str, stored) -> Volume:
    """A case's image as the server holds it: its file read with the core reader (as query thumbnails read it),
    or, for a case added as an uploaded volume, that volume while the volume store (``stored``: sha -> Volume,
    KeyError when absent) still holds it (exactly as uploaded). A file's whole-number voxels travel as int16
    when that loses nothing."""
    gone = InputError(
        f"case {record.case_id!r} of library {library_id!r}: the case's image is not on the server any more "
        "(its file was moved or its uploaded volume evicted); add it again to open it."
    )
    if record.abs_path:
        if not Path(record.abs_path).exists():
            raise gone
        volume = read_volume(record.abs_path, check_hu=False)
        return Volume(_compact(volume.array), volume.ijk_to_ras, record.case_id)
    if not record.source_key.startswith("volume:"):
        raise gone
    try:
        volume = stored(record.source_key.removeprefix("volume:"))
    except KeyError:
        raise gone from None
    return Volume(volume.array, volume.ijk_to_ras, record.case_id)


def _compact(array: np.ndarray) -> np.ndarray:
    """int16 for float voxels that are all whole numbers in int16's range (CT read as float32 HU): half the
    bytes on the wire, the same values."""
    if array.dtype.kind != "f" or array.size == 0:
        return array
    info = np.iinfo(np.int16)
    if array.min() < info.min or array.max() > info.max:
        return array
    compact = array.astype(np.int16)
    return compact if np.array_equal(compact, array) else array
