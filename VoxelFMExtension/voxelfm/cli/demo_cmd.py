"""`voxelfm demo --out DIR`: the README Quick-start main job on the embedded sample chest CT."""

from __future__ import annotations

import argparse
import json

from . import options
from .common import command
from .outputs import add_overwrite_arg, output_plan

# What a demo run writes into --out (files.run_folder refuses a folder holding anything else).
DEMO_FILES = (
    "features.npz",
    "features_pca.png",
    "tumour_seg.nii.gz",
    "tumour_seg.seg.nrrd",
    "tumour_overlay.png",
    "summary.json",
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
    info = s["model"]
    log.info("model: %s (%s; %s)", info.get("id"), info.get("source"), s["model_choice"])
    log.info(
        "tumour from %d labelled slice(s) %s: Dice %.3f (all slices), %s (unlabelled slices); %.2f ml vs %.2f ml",
        len(s["labelled_axial_slices"]),
        s["labelled_axial_slices"],
        s["dice_all_slices"],
        s["dice_unlabelled_slices"],
        s["predicted_ml"],
        s["reference_ml"],
    )
    for name, path in res.files.items():
        log.info("wrote %-15s %s", name, path)
    print(json.dumps(s["timings_s"]))
    return 0


@command("demo", run)
def arguments(p: argparse.ArgumentParser) -> None:
    """main job on the embedded sample CT: features + PCA picture + few-shot tumour segmentation

    Fetch the sample chest CT (pyradiomics lung1, sha256-checked), extract features with the default
    model, fit a segmentation probe on labelled axial slices of the nodule (default 1) and segment the
    whole volume. Writes features.npz, features_pca.png, tumour_seg.nii.gz/.seg.nrrd, tumour_overlay.png
    and summary.json into --out.
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
