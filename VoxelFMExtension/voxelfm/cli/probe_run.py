"""What `probe_cmd.py` runs: its handlers, imported only when the command runs (``common.deferred``), so
`voxelfm --help` does not load torch or the pipelines."""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

from ..errors import InputError
from ..files import file_kinds as kinds
from ..files.atomic import atomic_write_text
from ..files.probe_paths import probe_paths
from ..probes.config import ProbeConfig
from ..probes.evaluate import headline
from ..probes.manifest import read_manifest
from ..probes.pipeline import ProbePipeline
from ..probes.probe_file import load_probe, save_probe
from ..probes.report import write_report
from ..progress import TqdmProgress
from .common import config_from_args, log, spec_and_options
from .localize_run import run_fit_localisation
from .outputs import output_plan
from .probe_cmd import TABLE_SUFFIXES


def _pipeline(args: argparse.Namespace):
    spec, feature_options = spec_and_options(args)
    return ProbePipeline(spec, options=feature_options)


def run_fit(args: argparse.Namespace) -> int:
    if args.task == "localisation":  # landmarks (manifest: image, points): voxelfm.cli.localize_run
        return run_fit_localisation(args)

    config = config_from_args(
        ProbeConfig,
        args,
        "head pooling folds lr batch_size patience class_weights knn_k seed",
        max_epochs="epochs",
        n_bootstrap="bootstrap",
    )
    targets = [t.strip() for t in args.targets.split(",")] if args.targets else None
    manifest = read_manifest(args.manifest, args.task, targets, args.time_column, args.event_column)
    plan = _fit_outputs(args, manifest)
    bar = TqdmProgress("features")
    try:
        result = _pipeline(args).fit(args.task, manifest, config, progress=bar)
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
        plan.written(atomic_write_text(Path(args.out), buf.getvalue()))
        log.info("wrote %s (%d rows)", args.out, len(rows))
    else:
        sys.stdout.write(buf.getvalue())
    return 0
