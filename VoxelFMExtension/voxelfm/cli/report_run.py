"""What `report_cmd.py` runs: its handlers, imported only when the command runs (``common.deferred``), so
`voxelfm --help` does not load torch or the pipelines."""

from __future__ import annotations

import argparse
import sys

from ..errors import InputError
from ..files import file_kinds as kinds
from ..files.atomic import atomic_write_group
from ..imaging.io import read_volume
from ..progress import TqdmProgress
from ..report.files import draft_paths
from ..report.library_source import library_neighbours
from ..report.neighbours import ConsensusConfig
from ..report.pipeline import ReportPipeline
from ..report.segmentation_files import read_segmentation
from ..report.vlm.config import GenerationConfig
from ..report.vlm.pipeline import VLMReporter
from .common import log, spec_and_options
from .outputs import output_plan
from .remote_run import local_only, report_on_server, server_client


def _split_paths(args: argparse.Namespace) -> tuple[str | None, str]:
    if len(args.paths) > 2:
        raise InputError(f"Give at most LIBRARY and IMAGE; got {len(args.paths)} paths.")
    return (None, args.paths[0]) if len(args.paths) == 1 else (args.paths[0], args.paths[1])


def draft_pipeline(args: argparse.Namespace):
    consensus = ConsensusConfig(k=args.neighbours, temperature=args.temperature, min_support=args.min_support)
    spec, feature_options = spec_and_options(args)
    return ReportPipeline(spec, args.template, consensus, feature_options)


def draft_sources(args: argparse.Namespace, pipeline, library: str | None) -> tuple:
    """(neighbour source or None, report generator or None) for a pipeline."""
    neighbours = generator = None
    if library:
        neighbours = library_neighbours(library, pipeline.spec, pipeline.service, pipeline.options)
    if args.vlm:
        generation = GenerationConfig(args.strategy, args.max_new_tokens, args.top_p)
        generator = VLMReporter(args.vlm, pipeline.spec, generation, pipeline.options, pipeline.service)
    return neighbours, generator


def _draft(pipeline, image, segmentation, probes, neighbours, generator, progress=None):
    seg = read_segmentation(segmentation) if segmentation else None
    return pipeline.draft(read_volume(str(image)), probes, seg, neighbours, generator, progress)


def draft_rows(args: argparse.Namespace, rows: list[dict]) -> list:
    """A draft for each manifest row ('image', optional 'segmentation') with the sources of ``args``; with
    ``--leave-out-self`` the library case whose id is the row's id is never a neighbour of that row."""
    pipeline = draft_pipeline(args)
    neighbours, generator = draft_sources(args, pipeline, args.library)
    drafts = []
    for r in rows:
        source = neighbours
        if neighbours is not None and getattr(args, "leave_out_self", False):
            source = library_neighbours(
                args.library, pipeline.spec, pipeline.service, pipeline.options, {r["id"]}
            )
        drafts.append(_draft(pipeline, r["image"], r.get("segmentation"), args.probe, source, generator))
    return drafts


def run(args: argparse.Namespace) -> int:
    library, image = _split_paths(args)
    if not (library or args.probe or args.segmentation or args.vlm):
        raise InputError(
            "Nothing to draft a report from: give a case LIBRARY, --probe, --segmentation and/or --vlm."
        )
    local_only(args, vlm=args.vlm)
    client = server_client(args)  # LIBRARY is then a library id of the server
    plan = output_plan(args).input(
        image, None if client else library, args.segmentation, args.vlm, *args.probe
    )
    outputs = (
        [plan.output(p, "--out", kind=kinds.REPORT_DRAFT) for p in draft_paths(args.out)] if args.out else []
    )
    plan.check()
    bar = TqdmProgress("report")
    try:
        if client:
            draft = report_on_server(client, args, library, image, bar)
        else:
            pipeline = draft_pipeline(args)
            neighbours, generator = draft_sources(args, pipeline, library)
            draft = _draft(pipeline, image, args.segmentation, args.probe, neighbours, generator, bar)
    finally:
        bar.close()
    for warning in draft.warnings:
        log.warning("%s", warning)
    if outputs:
        text, document = draft.text, draft.to_json() + "\n"
        atomic_write_group(  # both written before either replaces its file: a failure keeps the previous pair
            [
                (outputs[0], lambda tmp: tmp.write_text(text, encoding="utf-8"), ""),
                (outputs[1], lambda tmp: tmp.write_text(document, encoding="utf-8"), ""),
            ]
        )
        plan.done()
        log.info("wrote %s and %s", *outputs)
    sys.stdout.write(draft.to_json() + "\n" if args.json else draft.text)
    return 0
