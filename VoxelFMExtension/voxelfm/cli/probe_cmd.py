"""`voxelfm fit-probe` and `voxelfm apply-probe`: probes on frozen features, from a manifest of cases."""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

from ..files import file_kinds as kinds
from . import options
from .common import add_model_and_feature_args, command, log, spec_and_options
from .outputs import add_overwrite_arg, output_plan

POOLINGS = ("cls", "mean", "cls+mean", "registers", "cls+registers", "all", "tokens", "tokens+cls")
TABLE_SUFFIXES = (".csv", ".tsv", ".txt")


def _pipeline(args: argparse.Namespace):
    from ..probes.pipeline import ProbePipeline

    spec, feature_options = spec_and_options(args)
    return ProbePipeline(spec, options=feature_options)


def run_fit(args: argparse.Namespace) -> int:
    if args.task == "localisation":  # landmarks (manifest: image, points): voxelfm.cli.localize_cmd
        from .localize_cmd import run_fit_localisation

        return run_fit_localisation(args)

    from ..probes.config import ProbeConfig
    from ..probes.evaluate import headline
    from ..probes.manifest import read_manifest
    from ..probes.probe_file import save_probe
    from ..probes.report import write_report
    from ..progress import TqdmProgress

    config = ProbeConfig(
        head=args.head,
        pooling=args.pooling,
        folds=args.folds,
        max_epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        patience=args.patience,
        class_weights=args.class_weights,
        knn_k=args.knn_k,
        n_bootstrap=args.bootstrap,
        seed=args.seed,
    )
    targets = [t.strip() for t in args.targets.split(",")] if args.targets else None
    manifest = read_manifest(args.manifest, args.task, targets, args.time_column, args.event_column)
    plan = _fit_outputs(args, manifest)
    bar = TqdmProgress("features")
    try:
        result = _pipeline(args).fit(args.task, manifest, config, bar)
    finally:
        bar.close()
    st, js = save_probe(result.probe, args.out)
    rj, rp = write_report(result, args.out, manifest.ids)
    name, value = headline(result.metrics)
    ci = result.metrics.get(name, {}).get("ci95", [None, None])
    knn = headline(result.metrics.get("knn_baseline", {}))[1]
    log.info(
        "%s (%s): %s = %s, 95%% CI %s; kNN baseline %s",
        args.task,
        result.metrics["evaluation"],
        name,
        _fmt(value),
        "-".join(_fmt(c) for c in ci),
        _fmt(knn),
    )
    log.info("wrote %s, %s, %s, %s", js, st, rj, rp)
    plan.done()
    return 0


def _fit_outputs(args: argparse.Namespace, manifest):
    """PROBE.safetensors/.json and PROBE.report.json/.png, checked against the manifest and its images."""
    plan = output_plan(args).input(args.manifest, *manifest.images)
    st, js = plan.probe_outputs(args.out, "--out", kind=kinds.COHORT_PROBE)
    base = js.with_suffix("")
    plan.output(base.with_name(base.name + ".report.json"), "--out (report)", kind=kinds.COHORT_PROBE_REPORT)
    plan.output(
        base.with_name(base.name + ".report.png"), "--out (report picture)", kind=kinds.COHORT_PROBE_PICTURE
    )
    return plan.check()


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def run_apply(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..files.probe_paths import probe_paths
    from ..probes.manifest import read_manifest
    from ..probes.probe_file import load_probe
    from ..progress import TqdmProgress

    probe = load_probe(args.probe)
    images: list = [Path(p) for p in args.images]
    ids = [str(p) for p in images]
    if args.manifest:
        m = read_manifest(args.manifest, probe.task, need_targets=False)
        images += m.images
        ids += m.ids
    if not images:
        raise InputError("No images: give image paths or --manifest.")
    missing = [str(p) for p in images if not Path(p).exists()]
    if missing:
        raise InputError(
            f"Image(s) not found: {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else "")
        )
    plan = output_plan(args).input(*probe_paths(args.probe), args.manifest, *images)
    if args.out:
        plan.output(args.out, "--out", suffixes=TABLE_SUFFIXES, kind=kinds.PREDICTIONS)
    plan.check()
    bar = TqdmProgress("features")
    try:
        outputs = _pipeline(args).apply(probe, images, bar)
    finally:
        bar.close()
    header = ["image", *probe.output_columns()]
    rows = [[i, *r] for i, r in zip(ids, probe.table_rows(outputs), strict=True)]
    delimiter = "," if args.out and args.out.lower().endswith(".csv") else "\t"
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=delimiter, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        w.writerow([f"{v:.6g}" if isinstance(v, float) else v for v in r])
    if args.out:
        from ..files.atomic import atomic_write_text

        plan.written(atomic_write_text(Path(args.out), buf.getvalue()))
        log.info("wrote %s (%d rows)", args.out, len(rows))
    else:
        sys.stdout.write(buf.getvalue())
    return 0


@command("fit-probe", run_fit)
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


@command("apply-probe", run_apply)
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
