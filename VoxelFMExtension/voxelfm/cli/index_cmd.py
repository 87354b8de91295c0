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
from .common import add_model_and_feature_args, command, log, spec_and_options
from .outputs import output_plan
from .remote import add_server_arg, index_add_on_server, index_list_on_server, server_client


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


def run_add(args: argparse.Namespace) -> int:
    import torch

    from ..errors import InputError
    from ..files.documents import read_text_file
    from ..pretrain.distributed import init_from_env, shutdown
    from ..progress import TqdmProgress
    from ..retrieval.config import RetrievalConfig
    from ..retrieval.pipeline import RetrievalPipeline
    from ..retrieval.sources import expand_inputs

    if args.threads:
        torch.set_num_threads(args.threads)
    if client := server_client(args):  # LIBRARY is then a library id of the server
        return index_add_on_server(client, args)
    plan = output_plan(args).input(*args.images, args.report)
    plan.managed_folder(args.library, "LIBRARY")  # the library recognises its own files (library.sqlite)
    plan.check()
    sources = expand_inputs(args.images)
    single = (args.report, args.findings, args.case_id)
    if len(sources) != 1 and any(v is not None for v in single):
        raise InputError(
            "--report, --findings and --case-id describe one image; for several use a manifest with report / "
            f"findings / id columns ({len(sources)} images were given)."
        )
    if len(sources) == 1:
        if args.report:
            sources[0].report = read_text_file(args.report, "--report")
        sources[0].findings = args.findings if args.findings is not None else sources[0].findings
        sources[0].case_id = args.case_id or sources[0].case_id
    config = RetrievalConfig(feature_spacing_mm=args.feature_spacing) if args.feature_spacing else None
    spec, feature_options = spec_and_options(args)
    pipeline = RetrievalPipeline(spec, config, feature_options)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dist = init_from_env("cuda" if device.startswith("cuda") else "cpu")
    bar = TqdmProgress("index add", disable=args.no_progress or not dist.is_main or None)
    try:
        report = pipeline.add_sources(args.library, sources, progress=bar, dist=dist)
    finally:
        bar.close()
        shutdown(dist)
    if dist.is_main:
        log.info("%s: %s", args.library, report.summary())
        report.raise_failures()
    return 0


def run_list(args: argparse.Namespace) -> int:
    from ..retrieval.library import CaseLibrary

    if client := server_client(args):
        return index_list_on_server(client, args)

    with CaseLibrary.open(args.library) as lib:
        cases = lib.cases()
        if args.json:
            keys = ("case_id", "path", "patient_id", "study_uid", "series_uid", "added_at")
            rows = [{**{k: getattr(c, k) for k in keys}, "has_report": c.has_report} for c in cases]
            print(json.dumps(rows, indent=1))
            return 0
        ident = lib.identity or {}
        print(
            f"{lib.folder}: {len(cases)} case(s); model {ident.get('id', '-')}; {lib.dim or '-'}-d embeddings"
        )
        for c in cases:
            flags = "report" if c.has_report else ""
            print(f"{c.case_id:<28} {c.added_at:<20} {flags:<7} {c.path or '(scene volume)'}")
    return 0


def run_remove(args: argparse.Namespace) -> int:
    from ..retrieval.library import CaseLibrary

    with CaseLibrary.open(args.library, writer=True) as lib:
        record = lib.remove_case(args.case_id)
        lib.indexes.update()
    log.info("removed %s (%s) from %s", record.case_id, record.path or "scene volume", args.library)
    return 0


def run_rebuild(args: argparse.Namespace) -> int:
    from ..retrieval.library import recover_damaged
    from ..retrieval.store import LibraryDamagedError

    try:
        states = _rebuild_indexes(args.library)
    except LibraryDamagedError as exc:
        log.warning("%s", exc)
        log.warning("%s: %s", args.library, recover_damaged(args.library).summary())
        states = _rebuild_indexes(args.library)
    for kind, s in states.items():
        if s is not None:
            log.info("%s index: %s, %d vectors (%s)", kind, s.kind, s.ntotal, s.file)
    return 0


def _rebuild_indexes(library: str) -> dict:
    from ..retrieval.library import CaseLibrary

    with CaseLibrary.open(library, writer=True) as lib:
        lib.indexes.rebuild()
        return {k: lib.indexes.state(k) for k in lib.indexes.kinds}


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
    add.add_argument("--threads", type=options.positive_int, default=None, help="torch CPU threads")
    add.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_model_and_feature_args(add)
    add_server_arg(add)
    add.set_defaults(func=run_add)
    for name, func, helptext in (
        ("list", run_list, "list the cases of a library"),
        ("rebuild", run_rebuild, "rebuild the index files from the stored embeddings"),
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
    rm.set_defaults(func=run_remove)
