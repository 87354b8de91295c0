"""Arguments and helpers shared by several commands (model choice, feature extraction options)."""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING, Any

from ..features.tiling import default_max_tokens
from . import options

if TYPE_CHECKING:
    from ..features.spec import FeatureOptions, ModelSpec

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
    p.add_argument(
        "--device",
        type=options.device,
        default="auto",
        help="auto (cuda > mps > cpu), cpu, cuda, cuda:1, mps",
    )
    p.add_argument(
        "--precision",
        choices=options.PRECISIONS,
        default="auto",
        help="backbone arithmetic: auto (bf16 where the hardware runs it fast, else fp32), fp32 or bf16",
    )


def add_series_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--series",
        default=None,
        metavar="UID",
        help="the series to read when a DICOM folder holds several (the error lists their UIDs)",
    )


def add_feature_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-tokens",
        type=options.int_at_least(64),
        default=default_max_tokens(),
        help="tile budget in patch tokens (default: what this machine's memory allows, 4096-32768; "
        f"here {default_max_tokens()})",
    )
    p.add_argument(
        "--overlap", type=options.non_negative_int, default=2, help="tile overlap in patches (default 2)"
    )
    p.add_argument("--crop-background", action="store_true", help="crop to the body before resampling")
    p.add_argument(
        "--max-patches",
        type=options.positive_int,
        default=None,
        help="shrink the volume to at most N patches",
    )
    p.add_argument("--no-cache", action="store_true", help="do not read/write the feature cache")


def add_model_and_feature_args(p: argparse.ArgumentParser) -> None:
    """--model ... --precision, then --max-tokens ... --no-cache: what every command that extracts features takes."""
    add_model_args(p)
    add_feature_args(p)


def spec_from_args(args: argparse.Namespace):
    """The ModelSpec a command's --model/--device/--precision/--max-tokens describe."""
    from ..features.service import ModelSpec

    return ModelSpec(
        model=args.model or "",
        device=getattr(args, "device", "auto"),
        precision=getattr(args, "precision", "auto"),
        max_tokens=getattr(args, "max_tokens", 8192),
        config=getattr(args, "model_config", None),
    )


def load_model_from_args(args: argparse.Namespace):
    """The backbone of --model (or the default policy) from the process-wide service; it logs which and why."""
    from ..features.service import feature_service

    return feature_service().backbone(spec_from_args(args))


def feature_options_from_args(args: argparse.Namespace):
    from ..features.spec import FeatureOptions

    return FeatureOptions(
        crop_background=bool(args.crop_background),
        max_patches=args.max_patches,
        overlap=args.overlap,
        cache=not args.no_cache,
    )


def spec_and_options(args: argparse.Namespace) -> tuple[ModelSpec, FeatureOptions]:
    """(ModelSpec, FeatureOptions) of the options `add_model_and_feature_args` added: what a pipeline takes."""
    return spec_from_args(args), feature_options_from_args(args)


def preprocess_from_args(model: Any, args: argparse.Namespace):
    import dataclasses

    from ..features.extract import default_preprocess_for

    cfg = default_preprocess_for(model)
    return dataclasses.replace(cfg, crop_background=bool(args.crop_background), max_patches=args.max_patches)


def add_command(
    sub: argparse._SubParsersAction,
    name: str,
    help_text: str,
    doc: str | None,
    raw: bool = True,
    **kwargs: Any,
) -> argparse.ArgumentParser:
    """A sub-command: ``doc`` is its --help description, shown as written (a module docstring) when ``raw``,
    else wrapped (a one-paragraph string)."""
    if raw:
        kwargs["formatter_class"] = argparse.RawDescriptionHelpFormatter
    return sub.add_parser(name, help=help_text, description=doc, **kwargs)
