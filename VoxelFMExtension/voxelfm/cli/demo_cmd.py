"""`voxelfm demo --out DIR`: the README Quick-start main job, a tour of every capability on the sample CTs."""

from __future__ import annotations

import argparse
import json

from . import options
from .common import command
from .outputs import add_overwrite_arg, output_plan

# What a demo run writes into --out (files.run_folder refuses a folder holding anything else).
DEMO_FILES = (
    "index.html",
    "summary.json",
    "features.npz",
    "features_pca.png",
    "1_features_pca.png",
    "tumour_seg.nii.gz",
    "tumour_seg.seg.nrrd",
    "2_tumour_segmentation.png",
    "cases",
    "landmarks_lung1.mrk.json",
    "landmarks_found_in_copy.mrk.json",
    "landmarks_truth_in_copy.mrk.json",
    "3_landmarks.png",
    "case_library",
    "4_similar_cases.png",
    "report_draft.json",
    "report_draft.txt",
)


def run(args: argparse.Namespace) -> int:
    from ..progress import TqdmProgress
    from ..samples.demo import run_demo
    from .common import log, spec_from_args

    plan = output_plan(args)
    plan.run_folder(args.out, "demo", DEMO_FILES)
    plan.check().claim_folders()
    bar = TqdmProgress("demo")
    try:
        res = run_demo(args.out, spec_from_args(args), args.slices, progress=bar)
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


@command("demo", run)
def arguments(p: argparse.ArgumentParser) -> None:
    """the tour on the embedded sample CTs: features, segmentation, landmarks, similar cases, report

    Fetch the two sample chest CTs (pyradiomics lung1 and lung2, sha256-checked) and, with the default
    model: features + PCA picture; few-shot tumour segmentation from labelled axial slices (default 1)
    with Dice; landmark transfer to a moved and cropped copy of lung1 (errors in mm); a 3-case library
    queried with lung1 (similarity scores); a report draft with its evidence. Writes index.html (one page
    with every picture and what it means), summary.json and every result file into --out.
    """
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--slices",
        type=options.positive_int,
        default=1,
        help="number of labelled axial slices (default 1: the nodule spans only 3 of the 5 mm slices)",
    )
    p.add_argument(
        "--model", default=None, help="registry id or checkpoint path (default: see `voxelfm models`)"
    )
    p.add_argument("--model-config", default=None, help=argparse.SUPPRESS)
    p.add_argument("--device", type=options.device, default="auto")
    p.add_argument("--precision", choices=options.PRECISIONS, default="auto")
    p.add_argument("--max-tokens", type=options.int_at_least(64), default=8192)
    add_overwrite_arg(p)
