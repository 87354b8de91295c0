"""What `demo_cmd.py` runs: its handlers, imported only when the command runs (``common.deferred``), so
`voxelfm --help` does not load torch or the pipelines."""

from __future__ import annotations

import argparse
import json

from ..progress import TqdmProgress
from ..samples import demo
from .common import log, spec_from_args
from .demo_cmd import DEMO_FILES
from .outputs import output_plan


def run(args: argparse.Namespace) -> int:
    plan = output_plan(args)
    plan.run_folder(args.out, "demo", DEMO_FILES)
    plan.check().claim_folders()
    bar = TqdmProgress("demo")
    try:
        res = demo.run_demo(args.out, spec_from_args(args), args.slices, progress=bar)
    finally:
        bar.close()
    plan.written(*res.files.values())
    s = res.summary
    log.info(
        "1. features: grid %s; 2. tumour from %d labelled slice(s) %s: Dice %.3f (all slices), %s (unlabelled)",
        " x ".join(map(str, s["feature_grid"])),
        len(s["labelled_axial_slices"]),
        s["labelled_axial_slices"],
        s["dice_all_slices"],
        s["dice_unlabelled_slices"],
    )
    lm = s["landmarks"]
    log.info(
        "3. landmarks in the moved copy: median %.1f mm, max %.1f mm",
        lm["median_error_mm"],
        lm["max_error_mm"],
    )
    hits = ", ".join(f"{h['case_id']} {h['score']:.3f}" for h in s["retrieval"]["whole_volume"])
    log.info("4. similar cases of lung1: %s", hits)
    log.info("5. report draft: %d sentence(s) with evidence", len(s["report"]["sentences"]))
    log.info("open %s in a browser", res.files["page"].resolve())
    print(json.dumps(s["timings_s"]))
    return 0
