"""What `segment_cmd.py` runs: its handlers, imported only when the command runs (``common.deferred``), so
`voxelfm --help` does not load torch or the pipelines."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from ..files import file_kinds as kinds
from ..files.output_ledger import own_output
from ..files.probe_paths import probe_paths
from ..imaging.formats import IMAGE_SUFFIXES, has_suffix
from ..imaging.io import read_volume
from ..segment.config import SegmentationConfig
from ..segment.files import OUTPUT_SUFFIXES, read_label_volume, write_segmentation
from ..segment.pipeline import SegmentationPipeline
from ..segment.postprocess import PostprocessConfig
from ..segment.probe_file import load_segmentation_probe, save_segmentation_probe
from ..segment.request import SegmentationApplyRequest, SegmentationFitRequest
from ..segment.voxel_features import IntensityConfig
from .common import log, spec_and_options
from .outputs import output_plan
from .remote_run import apply_on_server, fit_on_server, server_client


def _postprocess(args: argparse.Namespace):
    return PostprocessConfig(largest_component=args.largest_component, fill_holes=args.fill_holes)


def _pipeline(args: argparse.Namespace, config=None):
    spec, feature_options = spec_and_options(args)
    return SegmentationPipeline(spec, config, feature_options)


def _log_written(result, out: Path) -> None:
    counts = {s.name: s.voxels for s in result.statistics()}
    log.info("wrote %s (voxels per class: %s)", out, counts)
    for warning in result.warnings:
        log.warning("%s", warning)


def _fit(args: argparse.Namespace, plan) -> int:
    out = Path(args.out)
    config = SegmentationConfig(
        intensity=IntensityConfig(enabled=not args.no_intensity),
        postprocess=_postprocess(args),
        feature_spacing_mm=args.feature_spacing,
    )
    request = SegmentationFitRequest(
        read_volume(args.image, series=args.series),
        read_label_volume(args.labels),
        config,
        args.class_names or "",
        bool(args.painted_slices),
    )
    if client := server_client(args):
        labels = request.prepared_labels()
        result = fit_on_server(client, args, request.volume, labels, request.classes(labels), config)
    else:
        result = _pipeline(args, config).run_fit(request)
    probe = result.probe
    log.info("fitted probe: %s", {k: v for k, v in probe.metrics.items() if k != "warnings"})
    plan.written(write_segmentation(result, out))
    _log_written(result, out)
    if args.save_probe:
        st, js = save_segmentation_probe(probe, args.save_probe)
        log.info("saved probe %s + %s", js, st.name)
    plan.done()
    return 0


def _apply(args: argparse.Namespace, plan, pairs: list[tuple[Path, Path]]) -> int:
    probe = load_segmentation_probe(args.probe)
    pipeline = _pipeline(args)
    # with --largest-component/--fill-holes these replace the probe's own post-processing
    pp = _postprocess(args) if (args.largest_component or args.fill_holes) else None
    client = server_client(args)
    for src, dst in pairs:
        request = SegmentationApplyRequest(read_volume(str(src), series=args.series), probe, pp)
        result = (
            apply_on_server(client, args, request.volume, probe, pp)
            if client
            else pipeline.run_apply(request)
        )
        plan.written(write_segmentation(result, dst))  # one by one: an interrupted run's outputs stay ours
        _log_written(result, dst)
    return 0


def _apply_pairs(args: argparse.Namespace, plan) -> list[tuple[Path, Path]]:
    """(image, output) of each case; a folder of images gives OUT/<name>_seg.nii.gz per image."""
    image, out = Path(args.image), Path(args.out)
    plan.input(image, *probe_paths(args.probe))
    if not image.is_dir() or args.series:
        return [(image, plan.output(out, "--out", suffixes=OUTPUT_SUFFIXES, kind=kinds.SEGMENTATION))]
    files = sorted(f for f in image.iterdir() if has_suffix(f, IMAGE_SUFFIXES))
    if not files:
        return [
            (image, plan.output(out, "--out", suffixes=OUTPUT_SUFFIXES, kind=kinds.SEGMENTATION))
        ]  # DICOM
    if has_suffix(out, OUTPUT_SUFFIXES):
        raise InputError(f"{image} is a folder of images: --out must be a folder, got {out.name}.")
    ours = [f for f in files if (own := own_output(f)) is not None and own.kind == kinds.SEGMENTATION]
    for f in ours:
        log.warning("skipping %s: a segmentation VoxelFM wrote, not a CT", f)
    return [
        (
            f,
            plan.output(
                out / (f.name.split(".")[0] + "_seg.nii.gz"),
                f"the output for {f.name}",
                kind=kinds.SEGMENTATION,
            ),
        )
        for f in files
        if f not in ours
    ]


def run(args: argparse.Namespace) -> int:
    plan = output_plan(args)
    if args.labels:
        plan.input(args.image, args.labels)
        plan.output(args.out, "--out", suffixes=OUTPUT_SUFFIXES, kind=kinds.SEGMENTATION)
        if args.save_probe:
            plan.probe_outputs(args.save_probe, "--save-probe", kind=kinds.SEGMENTATION_PROBE)
        plan.check()
        return _fit(args, plan)
    if args.save_probe:
        raise InputError(
            f"--save-probe saves a probe fitted from --labels; with --probe nothing new is fitted ({args.probe} "
            "is the probe already). Drop --save-probe, or copy the probe files to keep another copy."
        )
    pairs = _apply_pairs(args, plan)
    plan.check()
    return _apply(args, plan, pairs)
