"""`voxelfm fit-probe` and `voxelfm apply-probe`: probes on frozen features, from a manifest of cases."""

from __future__ import annotations

import argparse

from . import options
from .common import add_model_and_feature_args, command, deferred
from .outputs import add_overwrite_arg

POOLINGS = ("cls", "mean", "cls+mean", "registers", "cls+registers", "all", "tokens", "tokens+cls")
TABLE_SUFFIXES = (".csv", ".tsv", ".txt")


@command("fit-probe", deferred("probe_run", "run_fit"))
def fit_arguments(p: argparse.ArgumentParser) -> None:
    """fit a classification / regression / survival probe from a manifest

    Manifest (CSV/TSV/JSONL): column 'image' (path relative to the manifest) + target columns; survival:
    'time' + 'event' (1 = event, 0 = censored); optional 'id', 'split' (train/val/test) or 'fold'. Writes
    PROBE.safetensors + PROBE.json and PROBE.report.json + PROBE.report.png.
    """
    p.add_argument(
        "--task", required=True, choices=("classification", "regression", "survival", "localisation")
    )
    p.add_argument("--manifest", required=True, help="CSV / TSV / JSONL manifest")
    p.add_argument(
        "--out", required=True, help="probe path without suffix (PROBE -> PROBE.json + PROBE.safetensors)"
    )
    p.add_argument(
        "--targets", default=None, help="comma-separated target columns (default: all other columns)"
    )
    p.add_argument("--time-column", default="time")
    p.add_argument("--event-column", default="event")
    p.add_argument("--head", default="linear", choices=("linear", "mlp", "attentive"))
    p.add_argument(
        "--pooling",
        default=None,
        choices=POOLINGS,
        help="cls, mean, cls+mean, registers, cls+registers, all; "
        "attentive: tokens, tokens+cls (default: cls+mean / tokens)",
    )
    p.add_argument(
        "--folds", type=options.int_at_least(2), default=5, help="k for k-fold cross-validation (default 5)"
    )
    p.add_argument(
        "--epochs", type=options.positive_int, default=300, help="max epochs (AdamW) / iterations (L-BFGS)"
    )
    p.add_argument(
        "--lr", type=options.positive_float, default=None, help="AdamW learning rate (default: per head)"
    )
    p.add_argument("--batch-size", type=options.positive_int, default=None)
    p.add_argument(
        "--patience", type=options.positive_int, default=30, help="early-stopping patience in epochs"
    )
    p.add_argument("--class-weights", default="balanced", choices=("balanced", "none"))
    p.add_argument(
        "--knn-k", type=options.non_negative_int, default=10, help="kNN baseline neighbours (0 = off)"
    )
    p.add_argument(
        "--bootstrap",
        type=options.non_negative_int,
        default=1000,
        help="bootstrap resamples for 95%% CIs (0 = off)",
    )
    p.add_argument("--seed", type=options.non_negative_int, default=0)
    add_overwrite_arg(p)
    add_model_and_feature_args(p)


@command("apply-probe", deferred("probe_run", "run_apply"))
def apply_arguments(p: argparse.ArgumentParser) -> None:
    """apply a probe to CT images; prints a table

    Prints one row per image (TSV), or writes --out table.csv/.tsv. The model defaults to the probe's
    backbone; a different backbone is refused.
    """
    p.add_argument("probe", help="PROBE, PROBE.json or PROBE.safetensors")
    p.add_argument("images", nargs="*", help="NIfTI / NRRD / MHA files or DICOM folders")
    p.add_argument(
        "--manifest", default=None, help="take the images from a manifest's 'image' column instead"
    )
    p.add_argument("--out", default=None, help="write the table to this .csv / .tsv (default: stdout, TSV)")
    add_overwrite_arg(p)
    add_model_and_feature_args(p)
