"""`voxelfm pretrain`: self-supervised pretraining (also run by the Slicer script and under torchrun)."""

from __future__ import annotations

import argparse

from . import options
from .common import add_threads_arg, command, deferred
from .outputs import add_overwrite_arg

# What a pretraining run and a hub export write at the top of their folders (files.run_folder).
RUN_ENTRIES = ("config.yaml", "metrics.jsonl", "loss.png", "checkpoints", "backbone")
HUB_ENTRIES = ("model.safetensors", "config.json", "README.md")


@command("pretrain", deferred("pretrain_run", "_handler"))
def arguments(p: argparse.ArgumentParser) -> None:
    """pretrain a VoxelFM backbone (DINO + iBOT + KoLeo) on CT volumes

    Pretrain on a folder or CSV/JSONL manifest of CT files. Multi-process: torchrun --nproc_per_node N -m
    voxelfm.cli pretrain ... (same arguments).
    """
    p.add_argument(
        "--data", required=True, help="folder of CT files / DICOM folders, or a .csv/.jsonl manifest"
    )
    p.add_argument("--config", default=None, help="YAML config (reference schema); defaults if omitted")
    p.add_argument("--out", required=True, help="run folder: checkpoints, metrics.jsonl, loss.png, backbone/")
    p.add_argument(
        "--steps",
        type=options.positive_int,
        default=None,
        help="train until this step number (absolute, also with --resume; default: epochs x epoch length; "
        "schedules always span epochs x epoch length)",
    )
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    p.add_argument(
        "--set",
        dest="overrides",
        type=options.key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set optim.epochs=2 (repeatable)",
    )
    p.add_argument(
        "--device", type=options.device, default="auto", help="auto (GPU if available), cpu, cuda, cuda:1"
    )
    p.add_argument("--export-hub", default=None, metavar="DIR", help="also export a hub-style folder here")
    add_threads_arg(
        p,
        "torch CPU threads per process (default: torch's choice; use 1 on a busy machine or per torchrun process)",
    )
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    add_overwrite_arg(p)
