"""`voxelfm report-eval MANIFEST`: score generated reports against references on the 18 CT-RATE findings.

MANIFEST (CSV/TSV/JSONL), one row per case, either
  'generated' + 'reference' texts (or 'generated_file' / 'reference_file'): scores those pairs; or
  'image' + 'reference': drafts a report for each image first, from --library / --probe / --vlm (and a
  per-row 'segmentation' column), exactly as `voxelfm report` would.
Findings are extracted from both texts by the negation-aware rule extractor (or --extractor
package.module:name, e.g. an LLM-based one); prints per-finding precision / recall / F1 with bootstrap 95% CIs
and the macro F1.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..files import file_kinds as kinds
from . import options
from .common import add_model_and_feature_args, command, log
from .outputs import add_overwrite_arg, output_plan
from .report_cmd import add_draft_source_args, draft_rows


def _pairs(args: argparse.Namespace, plan) -> tuple[list[str], list[str], list[dict]]:
    from ..errors import InputError
    from ..report.manifest import manifest_columns, read_report_manifest

    columns = manifest_columns(args.manifest)
    if "generated" in columns:
        rows = read_report_manifest(args.manifest, texts=("generated", "reference"))
        plan.check()
        return [r["generated"] for r in rows], [r["reference"] for r in rows], []
    if "image" not in columns:
        raise InputError(
            f"Manifest {args.manifest} needs 'generated' + 'reference' columns, or 'image' + 'reference'."
        )

    rows = read_report_manifest(
        args.manifest, texts=("reference",), images=("image",), optional=("segmentation",)
    )
    plan.input(*(r["image"] for r in rows), *(r["segmentation"] for r in rows if r["segmentation"]))
    plan.check()
    drafts = draft_rows(args, rows)
    return (
        [d.text for d in drafts],
        [r["reference"] for r in rows],
        [{"id": r["id"], **d.to_dict()} for r, d in zip(rows, drafts, strict=True)],
    )


def run(args: argparse.Namespace) -> int:
    from ..files.atomic import atomic_write_text
    from ..report.evaluate import evaluate_reports
    from ..report.extract import load_extractor

    extractor = load_extractor(args.extractor)
    plan = output_plan(args).input(args.manifest, *args.probe, args.library, args.vlm)
    out = (
        plan.output(args.out, "--out", suffixes=(".json",), kind=kinds.REPORT_EVALUATION)
        if args.out
        else None
    )
    generated, reference, drafts = _pairs(args, plan)
    result = evaluate_reports(
        generated,
        reference,
        extractor,
        n_bootstrap=args.bootstrap,
        seed=args.seed,
        uncertain_as=1 if args.uncertain == "positive" else 0,
    )
    data = result.to_dict()
    if drafts:
        data["drafts"] = drafts
    if out is not None:
        atomic_write_text(out, json.dumps(data, indent=2) + "\n")
        plan.done()
        log.info("wrote %s", out)
    sys.stdout.write((json.dumps(result.to_dict(), indent=2) if args.json else result.table()) + "\n")
    return 0


@command("report-eval", run)
def arguments(p: argparse.ArgumentParser) -> None:
    """score generated reports against references (18 CT-RATE findings, P/R/F1, bootstrap CIs)"""
    p.add_argument("manifest", help="CSV / TSV / JSONL of generated+reference or image+reference")
    p.add_argument("--extractor", default="rules", help="'rules' (default) or package.module:name")
    p.add_argument("--library", default=None, help="case library for drafting (image rows)")
    p.add_argument(
        "--leave-out-self",
        action="store_true",
        help="never use the library case whose id is the row's 'id' as its neighbour (leave-one-out)",
    )
    add_draft_source_args(p)
    p.add_argument("--bootstrap", type=options.non_negative_int, default=1000, help="resamples (0 = no CIs)")
    p.add_argument("--seed", type=options.non_negative_int, default=0)
    p.add_argument(
        "--uncertain",
        choices=("positive", "negative"),
        default="positive",
        help="how uncertain mentions count",
    )
    p.add_argument("--out", default=None, help="also write the scores (and drafts) to this .json")
    p.add_argument("--json", action="store_true", help="print the scores as JSON instead of a table")
    add_model_and_feature_args(p)
    add_overwrite_arg(p)
