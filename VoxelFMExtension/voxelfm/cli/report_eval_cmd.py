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

from . import options
from .common import add_model_and_feature_args, command, deferred
from .outputs import add_overwrite_arg
from .report_cmd import add_draft_source_args


@command("report-eval", deferred("report_eval_run", "run"))
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
