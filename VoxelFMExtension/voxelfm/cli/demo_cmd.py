"""`voxelfm demo --out DIR`: the README Quick-start main job on the embedded sample chest CT."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="main job on the embedded sample CT: features + PCA picture + few-shot tumour segmentation",
        description="Fetch the sample chest CT (pyradiomics lung1, sha256-checked), extract features with the "
        "default model, fit a segmentation probe on labelled axial slices of the nodule (default 1) and segment the "
        "whole volume. Writes features.npz, features_pca.png, tumour_seg.nii.gz/.seg.nrrd, "
        "tumour_overlay.png and summary.json into --out.",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--slices",
        type=int,
        default=1,
        help="number of labelled axial slices (default 1: the nodule spans only 3 of the 5 mm slices)",
    )
    p.add_argument(
        "--model", default=None, help="registry id or checkpoint path (default: see `voxelfm models`)"
    )
    p.add_argument("--model-config", default=None, help=argparse.SUPPRESS)
    p.add_argument("--device", default="auto")
    p.add_argument("--max-tokens", type=int, default=8192)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..progress import TqdmProgress
    from ..samples.demo import run_demo
    from .common import load_model_from_args, log

    model = load_model_from_args(args)
    info = getattr(model, "model_info", {})
    reason = f"{info.get('id')} ({info.get('source')})"
    bar = TqdmProgress("demo")
    try:
        res = run_demo(args.out, model, reason, args.slices, args.max_tokens, args.device, progress=bar)
    finally:
        bar.close()
    s = res.summary
    log.info("model: %s", reason)
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
