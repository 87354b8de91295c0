"""`voxelfm` console script and the Slicer headless entry point share this parser.

Each command lives in its own module, declared there with `common.command`; its handler returns an
exit status. Errors meant for users (VoxelFMError) print one clear line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from ..errors import VoxelFMError
from .common import commands_of

# Modules that each add one or more sub-commands. Order = order in --help.
COMMAND_MODULES = (
    "voxelfm.cli.models_cmd",  # voxelfm models
    "voxelfm.cli.features_cmd",  # voxelfm features
    "voxelfm.cli.segment_cmd",  # voxelfm segment
    "voxelfm.cli.probe_cmd",  # voxelfm fit-probe / apply-probe
    "voxelfm.cli.pretrain_cmd",  # voxelfm pretrain
    "voxelfm.cli.demo_cmd",  # voxelfm demo (README main job)
    "voxelfm.cli.index_cmd",  # voxelfm index add/list/remove/rebuild (case library)
    "voxelfm.cli.query_cmd",  # voxelfm query (similar-case retrieval)
    "voxelfm.cli.report_cmd",  # voxelfm report
    "voxelfm.cli.report_train_cmd",  # voxelfm report-train
    "voxelfm.cli.report_eval_cmd",  # voxelfm report-eval
    "voxelfm.cli.localize_cmd",  # voxelfm localize / box (landmarks, ROIs)
    "voxelfm.cli.serve_cmd",  # voxelfm serve (the VoxelFM server)
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voxelfm",
        description="VoxelFM 3D CT foundation model: features, probes, few-shot segmentation, pretraining.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a command module not present in this build
            if exc.name == name:
                continue
            raise
        for command in commands_of(module):
            command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except VoxelFMError as exc:
        print(f"voxelfm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"voxelfm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
