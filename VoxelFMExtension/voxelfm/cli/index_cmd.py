"""`voxelfm index add|list|remove|rebuild LIBRARY ...`: build and keep a case library for similar-case search.

    voxelfm index add LIBRARY IMAGE_OR_FOLDER... [--report FILE] [--findings JSON]
    voxelfm index list LIBRARY
    voxelfm index remove LIBRARY CASE_ID
    voxelfm index rebuild LIBRARY

LIBRARY is a folder (created if needed) holding library.sqlite and the FAISS index files. `add` takes image
files, DICOM series folders, folders of them, or a manifest (.csv/.tsv/.jsonl with an 'image' column and
optional id, report, report_file, findings, patient_id, study_uid, series_uid). It skips cases already in
the library, so an interrupted run is resumed by running it again. Data-parallel over GPUs or nodes:
    torchrun --nproc_per_node N -m voxelfm.cli index add LIBRARY FOLDER   (LIBRARY on a shared file system)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import options
from .common import add_model_and_feature_args, add_threads_arg, command, deferred
from .remote import add_server_arg


def json_value(text: str):
    """--findings: inline JSON or a .json file holding it (checked at parse time)."""
    path = Path(text)
    try:
        if path.suffix.lower() == ".json" and path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
        return json.loads(text)
    except (OSError, ValueError) as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON (inline or a .json file): {exc}") from None


def existing_file(text: str) -> str:
    if not Path(text).is_file():
        raise argparse.ArgumentTypeError(f"file {text!r} not found")
    return text


def _library_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("library", help="case library folder (library.sqlite + index files)")


@command("index")
def arguments(p: argparse.ArgumentParser) -> None:
    """build / list / edit a case library for similar-case retrieval"""
    isub = p.add_subparsers(dest="index_command", metavar="ACTION")
    isub.required = True
    add = isub.add_parser("add", help="add CTs (files, DICOM folders, folders, manifests); resumable")
    _library_arg(add)
    add.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER", help="CT files, folders or a manifest")
    add.add_argument("--report", type=existing_file, default=None, help="report text file (one image only)")
    add.add_argument("--findings", type=json_value, default=None, help="findings JSON (one image only)")
    add.add_argument("--case-id", default=None, help="case id (one image only; default: from the file name)")
    add.add_argument(
        "--feature-spacing",
        type=options.float_above(0.0, 20.0),
        default=None,
        help="new library only: extract features at this isotropic spacing (mm); default: the model's own",
    )
    add_threads_arg(add, "torch CPU threads")
    add.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_model_and_feature_args(add)
    add_server_arg(add)
    add.set_defaults(func=deferred("index_run", "run_add"))
    for name, func, helptext in (
        ("list", deferred("index_run", "run_list"), "list the cases of a library"),
        (
            "rebuild",
            deferred("index_run", "run_rebuild"),
            "rebuild the index files from the stored embeddings",
        ),
    ):
        q = isub.add_parser(name, help=helptext)
        _library_arg(q)
        if name == "list":
            q.add_argument("--json", action="store_true", help="print JSON instead of a table")
            add_server_arg(q)
        q.set_defaults(func=func)
    rm = isub.add_parser("remove", help="remove a case (its image files are never touched)")
    _library_arg(rm)
    rm.add_argument("case_id", help="case id as `voxelfm index list` shows it")
    rm.set_defaults(func=deferred("index_run", "run_remove"))
