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

from ..report.template_files import load_template
from . import options
from .common import add_model_and_feature_args, command, deferred
from .outputs import add_overwrite_arg
from .remote import add_server_arg


@options.validator
def template_option(text: str):
    """A report template, loaded and validated at parse time (a bad field is exit 2 before any model loads)."""
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


@command(
    "report",
    deferred("report_run", "run"),
    usage="%(prog)s [LIBRARY] IMAGE [--probe P ...] [--segmentation SEG] [--json] [options]",
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
