"""What `report_eval_cmd.py` runs: its handlers, imported only when the command runs (``common.deferred``), so
`voxelfm --help` does not load torch or the pipelines."""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import InputError
from ..files import file_kinds as kinds
from ..files.atomic import atomic_write_text
from ..report.evaluate import evaluate_reports
from ..report.extract import load_extractor
from ..report.manifest import manifest_columns, read_report_manifest
from .common import log
from .outputs import output_plan
from .report_run import draft_rows


def _pairs(args: argparse.Namespace, plan) -> tuple[list[str], list[str], list[dict]]:
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
