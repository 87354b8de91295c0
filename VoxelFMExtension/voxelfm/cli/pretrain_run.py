"""What `pretrain_cmd.py` runs: its handlers, imported only when the command runs (``common.deferred``), so
`voxelfm --help` does not load torch or the pipelines."""

from __future__ import annotations

import argparse

import torch

from ..pretrain import trainer
from ..pretrain.config import load_config
from ..pretrain.data import discover_sources
from ..pretrain.distributed import launched_rank
from .outputs import output_plan
from .pretrain_cmd import HUB_ENTRIES, RUN_ENTRIES


def _checked_plan(args: argparse.Namespace):
    """The config (validated) and the run folders (refusing foreign files), before any data or model work.

    Under torchrun only rank 0 checks and claims the folders (and writes in them): another rank that looked
    while rank 0 was claiming saw the marker's temporary file as a foreign file and refused the run. A refusal
    on rank 0 ends every rank (torchrun stops the others)."""
    config = load_config(args.config, args.overrides)
    plan = output_plan(args).input(args.data, args.config, *discover_sources(args.data))
    plan.run_folder(args.out, "pretrain", RUN_ENTRIES, "--out")
    if args.export_hub:
        plan.run_folder(args.export_hub, "hub-export", HUB_ENTRIES, "--export-hub")
    if launched_rank() == 0:
        plan.check()
    return config, plan


def _handler(args: argparse.Namespace) -> int:
    config, plan = _checked_plan(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    if launched_rank() == 0:
        plan.claim_folders()
    result = trainer.run_pretraining(
        data=args.data,
        config=config,
        out=args.out,
        steps=args.steps,
        resume=args.resume,
        device=args.device,
        export_hub=args.export_hub,
        show_bar=not args.no_progress,
    )
    if result.backbone_dir is not None:
        loss = "n/a" if result.last_loss is None else f"{result.last_loss:.4f}"
        print(
            f"steps {result.start_step}->{result.final_step}, last loss {loss}; backbone: {result.backbone_dir}"
        )
    return 0
