"""What goes into a case library (CaseSource) and what one stored case is (CaseRecord)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..imaging.formats import IMAGE_SUFFIXES
from ..imaging.volume import Volume

_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def image_stem(path: str | os.PathLike) -> str:
    """File name without its image suffix (``ct.nii.gz`` -> ``ct``); a folder keeps its name."""
    name = Path(path).name
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def clean_id(text: str) -> str:
    cleaned = _ID_CHARS.sub("_", text.strip()).strip("._-")
    return cleaned or "case"


def check_findings(findings: Any) -> Any:
    """Findings must be JSON (a dict or list, usually): returned unchanged, InputError otherwise."""
    try:
        json.dumps(findings)
    except (TypeError, ValueError) as exc:
        raise InputError(f"Findings must be JSON-serialisable (dict/list/str/number): {exc}") from exc
    return findings


@dataclass
class CaseSource:
    """One case to add: an image file / DICOM folder (``path``) or an in-memory volume (a Slicer node)."""

    path: str = ""  # as the user gave it ("" for an in-memory volume)
    volume: Volume | None = None
    case_id: str = ""  # wanted id; "" = from the file or volume name
    report: str | None = None
    findings: Any = None
    patient_id: str = ""
    study_uid: str = ""
    series_uid: str = ""
    source_key: str = ""  # fixed identity (a staged case whose volume is no longer in memory)

    def __post_init__(self) -> None:
        if not self.path and self.volume is None and not self.source_key:
            raise InputError("A case needs an image path or a volume.")
        check_findings(self.findings)

    @property
    def key(self) -> str:
        """Identity for "already added" (resume): the real path of a file, the voxels of a volume."""
        if self.source_key:
            return self.source_key
        if self.path:
            return "file:" + os.path.realpath(self.path)
        return "volume:" + self.volume.content_hash()  # type: ignore[union-attr]

    @property
    def display(self) -> str:
        return self.path or (self.volume.name if self.volume is not None else "") or "volume"

    def wanted_ids(self) -> list[str]:
        """Case ids to try in order: the given id, else the stem, then parent_stem, then stem-<hash>."""
        if self.case_id:
            return [clean_id(self.case_id)]
        if self.path:
            stem = clean_id(image_stem(self.path))
            parent = clean_id(Path(os.path.abspath(self.path)).parent.name)
            ids = [stem, f"{parent}_{stem}"]
        else:
            stem = clean_id(self.volume.name if self.volume is not None and self.volume.name else "volume")
            ids = [stem]
        return [*ids, f"{stem}-{hashlib.sha1(self.key.encode()).hexdigest()[:8]}"]


@dataclass
class CaseRecord:
    """One case as stored in the library."""

    row: int  # integer key (FAISS id); never reused after a removal
    case_id: str
    path: str  # the path the case was added from, as given ("" for a scene volume)
    abs_path: str  # the same made absolute, to load it again
    source_key: str
    series_uid: str = ""
    patient_id: str = ""
    study_uid: str = ""
    content_sha256: str = ""
    report: str | None = None
    findings: Any = None
    info: dict[str, Any] = field(default_factory=dict)  # shape, spacing, blocks, seconds
    added_at: str = ""
    generation: int = 0

    @property
    def has_report(self) -> bool:
        return bool(self.report)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
