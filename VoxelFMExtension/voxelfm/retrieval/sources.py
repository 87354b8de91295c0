"""Inputs of `voxelfm index add`: image files, DICOM folders, folders of them, and manifests, as CaseSources.

Manifest (.csv / .tsv / .jsonl): one row per case; ``image`` (required, relative to the manifest's folder),
optional ``id``, ``report`` (text), ``report_file`` (a text file), ``findings`` (JSON text, or an object in
JSON Lines), ``patient_id``, ``study_uid``, ``series_uid``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import SimpleITK as sitk

from ..errors import InputError
from ..files.documents import check_report_text, read_text_file
from ..files.manifest_table import read_manifest_rows, resolve_path
from ..imaging.dicom import choose_ct_series, find_series
from ..imaging.formats import has_suffix, is_dicom_dir, is_image_file, list_images
from ..probes.manifest import content_keys
from .records import CaseSource

MANIFEST_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson")  # not .txt: a report or notes file is no manifest
_DICOM_IDS = {"patient_id": "0010|0020", "study_uid": "0020|000d", "series_uid": "0020|000e"}


def is_manifest(path: str | Path) -> bool:
    p = Path(path)
    return p.is_file() and has_suffix(p, MANIFEST_SUFFIXES)


def expand_inputs(inputs: list[str]) -> list[CaseSource]:
    """CaseSources of every input, in a stable order (folders listed recursively, sorted)."""
    sources: list[CaseSource] = []
    for raw in inputs:
        path = Path(raw)
        if is_manifest(path):
            sources += read_case_manifest(path)
        elif path.is_dir() and not is_dicom_dir(path):
            found = list_images(raw)
            if not found:
                raise InputError(
                    f"The folder {raw} holds no CT images (NIfTI/NRRD/MHA files or DICOM series)."
                )
            sources += [CaseSource(path=str(p)) for p in found]
        elif path.exists():
            source = CaseSource(path=raw)
            check_readable_kind(source)  # a file named on the command line: refused before any work
            sources.append(source)
        else:
            raise InputError(
                f"{raw} not found: give image files, DICOM series folders, folders or a manifest."
            )
    seen: set[str] = set()
    unique = []
    for s in sources:  # the same file named twice is one case
        if s.key not in seen:
            seen.add(s.key)
            unique.append(s)
    return unique


def _findings(value: Any, where: str) -> Any:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: 'findings' is not valid JSON ({exc.msg}).") from exc
    return value


def read_case_manifest(path: Path) -> list[CaseSource]:
    table = read_manifest_rows(path)
    out = []
    for line, row in table.rows:
        where = f"{path}, line {line}"
        if not isinstance(row, dict) or not str(row.get("image") or "").strip():
            raise InputError(f"{where}: each row needs an 'image' path.")
        report = row.get("report") or None
        if row.get("report_file"):
            report_path = resolve_path(path, str(row["report_file"]))
            report = read_text_file(report_path, f"{where}: report_file")
        elif report is not None:
            check_report_text(str(report), f"{where}: 'report'")
        out.append(
            CaseSource(
                path=str(resolve_path(path, str(row["image"]).strip())),
                case_id=str(row.get("id") or "").strip(),
                report=report,
                findings=_findings(row.get("findings"), where),
                patient_id=str(row.get("patient_id") or ""),
                study_uid=str(row.get("study_uid") or ""),
                series_uid=str(row.get("series_uid") or ""),
            )
        )
    if not out:
        raise InputError(f"The manifest {path} lists no cases.")
    _check_rows(path, out, [line for line, _ in table.rows])
    return out


def _check_rows(path: Path, sources: list[CaseSource], lines: list[int]) -> None:
    """Before any work: every row's image exists, no id is given twice, no image is listed twice (the same
    path, or a byte-identical copy under another name); each error names the manifest's lines."""
    missing = [
        f"line {n}: {s.path}" for n, s in zip(lines, sources, strict=True) if not Path(s.path).exists()
    ]
    if missing:
        shown = "; ".join(missing[:5]) + (f"; ... ({len(missing)} in all)" if len(missing) > 5 else "")
        raise InputError(
            f"Manifest {path}: {len(missing)} image(s) not found ({shown}); paths are relative to the manifest's "
            "folder. Fix the paths or remove those rows."
        )
    for what, keys in (
        ("id", [s.case_id for s in sources]),
        ("image", content_keys([Path(s.path) for s in sources])),
    ):
        seen: dict[str, int] = {}
        for n, key in zip(lines, keys, strict=True):
            if key and key in seen:
                same = "" if what == "id" else " (the same file, or a byte-identical copy)"
                raise InputError(
                    f"Manifest {path}: line {n} repeats the {what} of line {seen[key]}{same}; each case needs "
                    f"its own row and id. Remove or fix one of the two rows."
                )
            seen.setdefault(key, n)


def dicom_ids(folder: Path) -> dict[str, str]:
    """Patient id, study and series UIDs of the CT series ``read_volume`` picks in a DICOM folder."""
    try:
        info = choose_ct_series(find_series(folder), folder)
        reader = sitk.ImageFileReader()
        reader.SetFileName(info.files[0])
        reader.ReadImageInformation()
    except (InputError, RuntimeError, IndexError):
        return {}
    return {k: reader.GetMetaData(tag).strip() for k, tag in _DICOM_IDS.items() if reader.HasMetaDataKey(tag)}


def with_dicom_ids(source: CaseSource) -> CaseSource:
    """Fill patient/study/series ids from the DICOM headers when the source is a series folder."""
    if not source.path or not Path(source.path).is_dir():
        return source
    ids = dicom_ids(Path(source.path))
    source.patient_id = source.patient_id or ids.get("patient_id", "")
    source.study_uid = source.study_uid or ids.get("study_uid", "")
    source.series_uid = source.series_uid or ids.get("series_uid", "")
    return source


def check_readable_kind(source: CaseSource) -> None:
    """Cheap check before any model work: a file with an image suffix or a DICOM folder."""
    if source.volume is not None:
        return
    p = Path(source.path)
    if not (is_image_file(p) or is_dicom_dir(p)):
        raise InputError(
            f"{source.path} is not a CT image VoxelFM reads (NIfTI .nii/.nii.gz, NRRD, MetaImage .mha/.mhd, or a "
            "DICOM series folder)."
        )
