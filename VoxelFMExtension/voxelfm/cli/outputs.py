"""Outputs of a command, in the CLI framework: ``--overwrite`` and the plan every command checks first.

A command adds ``add_overwrite_arg(p)`` to its parser, then at the top of its handler, before reading any
image or loading a model::

    plan = output_plan(args)
    plan.input(args.image)
    out = plan.output(args.out, "--out", suffixes=(".npz",))
    plan.check()            # exit 2 with one message when an output is unsafe; nothing was done
    ...                     # the work
    plan.done()             # notes the outputs in the ledger: a rerun may replace them

The rules are in ``voxelfm.files.outputs``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..files.outputs import OutputPlan


def add_overwrite_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing output files even when VoxelFM did not write them (inputs are never replaced)",
    )


def output_plan(args: argparse.Namespace) -> OutputPlan:
    """A plan for this command (``--overwrite`` taken from ``args`` when the command has it); a --model or
    --model-config given as a file is an input too (a probe must not be saved over the backbone)."""
    plan = OutputPlan(overwrite=bool(getattr(args, "overwrite", False)), by=f"voxelfm {args.command}")
    for name in ("model", "model_config"):
        value = getattr(args, name, None)
        if value and Path(value).expanduser().exists():
            plan.input(value)
    return plan
