"""What `report_train_cmd.py` runs: its handlers, imported only when the command runs (``common.deferred``), so
`voxelfm --help` does not load torch or the pipelines."""

from __future__ import annotations

import argparse

from ..errors import InputError
from ..progress import TqdmProgress
from ..report.manifest import read_report_manifest
from ..report.vlm.config import HeadConfig, TrainConfig
from ..report.vlm.deps import require_vlm
from ..report.vlm.pipeline import train_report_run
from ..report.vlm.run_files import RUN_ENTRIES, RUN_KIND
from .common import config_from_args, log, spec_and_options
from .outputs import output_plan


def _configs(args: argparse.Namespace):
    if args.latent % args.heads:
        raise InputError(f"--latent {args.latent} must be a multiple of --heads {args.heads}.")
    head = config_from_args(
        HeadConfig,
        args,
        "prompt max_report_tokens",
        num_queries="queries",
        latent_dim="latent",
        num_heads="heads",
    )
    train = config_from_args(
        TrainConfig, args, "stage1_steps stage2_steps batch_size lr_stage1 lr_stage2 lora_r lora_alpha seed"
    )
    return head, train


def run(args: argparse.Namespace) -> int:
    head, train = _configs(args)
    require_vlm()
    rows = read_report_manifest(args.manifest, texts=("report",), images=("image",))
    plan = output_plan(args).input(args.manifest, *(r["image"] for r in rows))
    out = plan.run_folder(args.out, RUN_KIND, RUN_ENTRIES)
    plan.check()
    plan.claim_folders()
    spec, feature_options = spec_and_options(args)
    bar = TqdmProgress("report-train")
    try:
        run_dir, history = train_report_run(
            [r["image"] for r in rows],
            [r["report"] for r in rows],
            args.lm,
            out,
            spec,
            head,
            train,
            tokenizer=args.tokenizer,
            options=feature_options,
            progress=bar,
        )
    finally:
        bar.close()
    for stage, losses in history.items():
        log.info("%s: loss %.4f -> %.4f over %d steps", stage, losses[0], losses[-1], len(losses))
    log.info("wrote run %s", run_dir)
    return 0
