"""`voxelfm report [LIBRARY] IMAGE`: draft a structured report where every sentence carries its evidence.

Sources, each optional (at least one): LIBRARY, a case library with reports (similar cases, sentence-level
consensus weighted by similarity); --probe, findings probes from fit-probe (present / uncertain / absent with
probability); --segmentation, a labelmap (names from a JSON beside it) or .seg.nrrd (volume, largest diameter,
centroid of each segment); --vlm, a report model trained with report-train. Prints the text, or with --json
one JSON object {"text", "sentences": [{"text", "section", "evidence": [...]}], ...}; --out REPORT writes
REPORT.txt and REPORT.json.
"""

from __future__ import annotations

import argparse
import sys

from ..files import file_kinds as kinds
from . import options
from .common import add_model_and_feature_args, command, log, spec_and_options
from .outputs import add_overwrite_arg, output_plan
from .remote import add_server_arg, local_only, report_on_server, server_client


@options.validator
def template_option(text: str):
    """A report template, loaded and validated at parse time (a bad field is exit 2 before any model loads)."""
    from ..report.template_files import load_template

    return load_template(text)


def add_draft_source_args(p: argparse.ArgumentParser) -> None:
    """The sources of a draft (shared with `voxelfm report`)."""
    p.add_argument("--probe", action="append", default=[], help="findings probe (repeatable)")
    p.add_argument("--vlm", default=None, help="trained report-model run folder (report-train)")
    p.add_argument(
        "--template",
        type=template_option,
        default=None,
        help="report template name or .yaml file (default chest_ct)",
    )
    p.add_argument("--neighbours", type=options.positive_int, default=5, help="similar cases to consult (k)")
    p.add_argument(
        "--min-support",
        type=options.float_above(0.0, 1.0),
        default=0.5,
        help="share of the neighbours' weight a sentence needs to enter the draft (default 0.5)",
    )
    p.add_argument(
        "--temperature",
        type=options.float_above(0.0, inclusive=True),
        default=0.05,
        help="neighbour weights exp((score - best) / T); 0 = equal weights (default 0.05)",
    )
    p.add_argument("--strategy", choices=("greedy", "nucleus"), default="greedy", help="VLM decoding")
    p.add_argument(
        "--top-p", type=options.float_above(0.0, 1.0), default=0.9, help="nucleus mass (default 0.9)"
    )
    p.add_argument("--max-new-tokens", type=options.positive_int, default=256, help="VLM report length limit")


def _split_paths(args: argparse.Namespace) -> tuple[str | None, str]:
    from ..errors import InputError

    if len(args.paths) > 2:
        raise InputError(f"Give at most LIBRARY and IMAGE; got {len(args.paths)} paths.")
    return (None, args.paths[0]) if len(args.paths) == 1 else (args.paths[0], args.paths[1])


def draft_pipeline(args: argparse.Namespace):
    from ..report.neighbours import ConsensusConfig
    from ..report.pipeline import ReportPipeline

    consensus = ConsensusConfig(k=args.neighbours, temperature=args.temperature, min_support=args.min_support)
    spec, feature_options = spec_and_options(args)
    return ReportPipeline(spec, args.template, consensus, feature_options)


def draft_sources(args: argparse.Namespace, pipeline, library: str | None) -> tuple:
    """(neighbour source or None, report generator or None) for a pipeline."""
    neighbours = generator = None
    if library:
        from ..report.library_source import library_neighbours

        neighbours = library_neighbours(library, pipeline.spec, pipeline.service, pipeline.options)
    if args.vlm:
        from ..report.vlm.config import GenerationConfig
        from ..report.vlm.pipeline import VLMReporter

        generation = GenerationConfig(args.strategy, args.max_new_tokens, args.top_p)
        generator = VLMReporter(args.vlm, pipeline.spec, generation, pipeline.options, pipeline.service)
    return neighbours, generator


def _draft(pipeline, image, segmentation, probes, neighbours, generator, progress=None):
    from ..imaging.io import read_volume
    from ..report.segmentation_files import read_segmentation

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
            from ..report.library_source import library_neighbours

            source = library_neighbours(
                args.library, pipeline.spec, pipeline.service, pipeline.options, {r["id"]}
            )
        drafts.append(_draft(pipeline, r["image"], r.get("segmentation"), args.probe, source, generator))
    return drafts


def run(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..files.atomic import atomic_write_group
    from ..progress import TqdmProgress
    from ..report.files import draft_paths

    library, image = _split_paths(args)
    if not (library or args.probe or args.segmentation or args.vlm):
        raise InputError(
            "Nothing to draft a report from: give a case LIBRARY, --probe, --segmentation and/or --vlm."
        )
    local_only(args, probe=args.probe, vlm=args.vlm)
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


@command(
    "report", run, usage="%(prog)s [LIBRARY] IMAGE [--probe P ...] [--segmentation SEG] [--json] [options]"
)
def arguments(p: argparse.ArgumentParser) -> None:
    """draft a report from a case library, findings probes, segmentations and/or a report model"""
    p.add_argument(
        "paths", nargs="+", metavar="PATH", help="[LIBRARY] IMAGE: a case library (optional), the CT"
    )
    p.add_argument("--segmentation", default=None, help="labelmap or .seg.nrrd of IMAGE to measure")
    add_draft_source_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object (text, sentences, evidence)")
    p.add_argument("--out", default=None, help="also write OUT.txt and OUT.json")
    add_model_and_feature_args(p)
    add_overwrite_arg(p)
    add_server_arg(p)
