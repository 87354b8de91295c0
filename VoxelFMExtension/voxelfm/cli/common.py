"""Arguments and helpers shared by several commands (model choice, preprocessing, device)."""

from __future__ import annotations

import argparse
import logging
from typing import Any

log = logging.getLogger("voxelfm")


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=None,
        help="registry id (see `voxelfm models`), checkpoint file or folder; default: official VoxelFM when "
        "cached or reachable, else the bundled offline model voxelfm-tiny",
    )
    p.add_argument(
        "--model-config", default=None, help="config.yaml for an official .pth not stored beside it"
    )
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:1, mps")


def add_feature_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-tokens", type=int, default=8192, help="tile budget in patch tokens (default 8192)")
    p.add_argument("--overlap", type=int, default=2, help="tile overlap in patches (default 2)")
    p.add_argument("--crop-background", action="store_true", help="crop to the body before resampling")
    p.add_argument("--max-patches", type=int, default=None, help="shrink the volume to at most N patches")
    p.add_argument("--no-cache", action="store_true", help="do not read/write the feature cache")


def load_model_from_args(args: argparse.Namespace):
    """Resolve --model (or the default policy), load it, and say which model is used and why."""
    from ..model.loading import load_backbone

    model_id = args.model
    if model_id is None:
        from ..hub.download import resolve_default_model

        resolved, reason = resolve_default_model()
        model_id = resolved.id
        log.info("model: %s (%s)", model_id, reason)
    else:
        log.info("model: %s", model_id)
    return load_backbone(model_id, config=args.model_config, device="cpu")


def preprocess_from_args(model: Any, args: argparse.Namespace):
    import dataclasses

    from ..features.extract import default_preprocess_for

    cfg = default_preprocess_for(model)
    return dataclasses.replace(cfg, crop_background=bool(args.crop_background), max_patches=args.max_patches)
