"""`voxelfm demo --out DIR`: the README Quick-start main job, a tour of every capability on the sample CTs."""

from __future__ import annotations

import argparse

from . import options
from .common import command, deferred
from .outputs import add_overwrite_arg

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


@command("demo", deferred("demo_run", "run"))
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
