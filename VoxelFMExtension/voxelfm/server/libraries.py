"""The case libraries a server offers, named by id (`voxelfm serve --libraries FILE`).

FILE is a JSON object {"chest-2024": "/data/libraries/chest", ...}; relative folders are read from FILE's own
folder. Clients name a library only by its id: a request never carries a server path.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from ..client.analysis_payloads import LIBRARY_ID_RE
from ..errors import InputError
from ..files.documents import read_mapping
from ..retrieval.library import CaseLibrary


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
