"""A draft on disk: the text (.txt) and the JSON with every sentence's evidence (.json), both atomic."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import InputError
from ..files.atomic import atomic_write_group
from .draft import ReportDraft


def draft_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """REPORT, REPORT.txt or REPORT.json -> (REPORT.txt, REPORT.json)."""
    path = Path(path)
    base = path.with_suffix("") if path.suffix.lower() in (".txt", ".json") else path
    return base.with_name(base.name + ".txt"), base.with_name(base.name + ".json")


def write_draft(draft: ReportDraft, path: str | os.PathLike, text: str | None = None) -> tuple[Path, Path]:
    """Write REPORT.txt (``text``: the user's edited text, else the draft's) and REPORT.json (the draft, with
    ``edited_text`` when the text was edited)."""
    txt, js = draft_paths(path)
    if txt.is_dir() or js.is_dir():
        raise InputError(f"{path}: a folder has that name; choose a file name for the report.")
    body = draft.text if text is None else text
    data = draft.to_dict()
    if text is not None and text != draft.text:
        data["edited_text"] = text
    document = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    body = body if body.endswith("\n") else body + "\n"
    atomic_write_group(  # both written before either replaces its file: a failure keeps the previous pair
        [
            (js, lambda tmp: tmp.write_text(document, encoding="utf-8"), ""),
            (txt, lambda tmp: tmp.write_text(body, encoding="utf-8"), ""),
        ]
    )
    return txt, js
