"""What `index_cmd.py` runs: its handlers, imported only when the command runs (``common.deferred``), so
`voxelfm --help` does not load torch or the pipelines."""

from __future__ import annotations

import argparse
import json

import torch

from ..errors import InputError
from ..files.documents import read_text_file
from ..pretrain.distributed import init_from_env, shutdown
from ..progress import TqdmProgress
from ..retrieval.config import RetrievalConfig
from ..retrieval.library import CaseLibrary, recover_damaged
from ..retrieval.pipeline import RetrievalPipeline
from ..retrieval.sources import expand_inputs
from ..retrieval.store import LibraryDamagedError
from .common import log, spec_and_options
from .outputs import output_plan
from .remote_run import index_add_on_server, index_list_on_server, server_client


def run_add(args: argparse.Namespace) -> int:
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
    with CaseLibrary.open(args.library, writer=True) as lib:
        record = lib.remove_case(args.case_id)
        lib.indexes.update()
    log.info("removed %s (%s) from %s", record.case_id, record.path or "scene volume", args.library)
    return 0


def run_rebuild(args: argparse.Namespace) -> int:
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
    with CaseLibrary.open(library, writer=True) as lib:
        lib.indexes.rebuild()
        return {k: lib.indexes.state(k) for k in lib.indexes.kinds}
