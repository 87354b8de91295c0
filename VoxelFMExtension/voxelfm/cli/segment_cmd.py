"""`voxelfm segment IMAGE (--labels LABELS | --probe PROBE) --out OUT`: few-shot or saved-probe segmentation.

LABELS: 0 background, 1..254 structures, 255 unlabelled, on any grid aligned with IMAGE in physical space
(``--painted-slices``: label files where unpainted voxels are 0 on the painted slices and 0 elsewhere too;
only slices holding a structure count). OUT: .nii.gz / .nii / .nrrd labelmap on IMAGE's grid, or .seg.nrrd.
With --probe, IMAGE may be a folder of images; OUT is then a folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..files import file_kinds as kinds
from . import options
from .common import add_model_and_feature_args, add_series_arg, command, log, spec_and_options
from .outputs import add_overwrite_arg, output_plan
from .remote import add_server_arg, apply_on_server, fit_on_server, server_client


def _postprocess(args: argparse.Namespace):
    from ..segment.postprocess import PostprocessConfig

    return PostprocessConfig(largest_component=args.largest_component, fill_holes=args.fill_holes)


def _pipeline(args: argparse.Namespace, config=None):
    from ..segment.pipeline import SegmentationPipeline

    spec, feature_options = spec_and_options(args)
    return SegmentationPipeline(spec, config, feature_options)


def _log_written(result, out: Path) -> None:
    counts = {s.name: s.voxels for s in result.statistics()}
    log.info("wrote %s (voxels per class: %s)", out, counts)
    for warning in result.warnings:
        log.warning("%s", warning)


def _fit(args: argparse.Namespace, plan) -> int:
    import numpy as np

    from ..errors import InputError
    from ..imaging.io import read_volume
    from ..imaging.volume import Volume
    from ..segment.classes import classes_from_names
    from ..segment.config import SegmentationConfig
    from ..segment.files import read_label_volume, write_segmentation
    from ..segment.labels import UNLABELLED, painted_slices_to_labels
    from ..segment.probe_file import save_segmentation_probe
    from ..segment.voxel_features import IntensityConfig

    out = Path(args.out)
    volume = read_volume(args.image, series=args.series)
    labels = read_label_volume(args.labels)
    if args.painted_slices:
        if (labels.array == UNLABELLED).any():
            raise InputError(
                "--painted-slices expects 0 for unpainted voxels, but the label image contains 255."
            )
        labels = Volume(painted_slices_to_labels(labels.array, axis=0), labels.ijk_to_ras, labels.name)
    values = [int(v) for v in np.unique(labels.array) if 0 < v < UNLABELLED]
    classes = classes_from_names(args.class_names, values)
    config = SegmentationConfig(
        intensity=IntensityConfig(enabled=not args.no_intensity),
        postprocess=_postprocess(args),
        feature_spacing_mm=args.feature_spacing,
    )
    client = server_client(args)
    result = (
        fit_on_server(client, args, volume, labels, classes, config)
        if client
        else _pipeline(args, config).fit(volume, labels, classes)
    )
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
    from ..imaging.io import read_volume
    from ..segment.files import write_segmentation
    from ..segment.probe_file import load_segmentation_probe

    probe = load_segmentation_probe(args.probe)
    pipeline = _pipeline(args)
    # with --largest-component/--fill-holes these replace the probe's own post-processing
    pp = _postprocess(args) if (args.largest_component or args.fill_holes) else None
    client = server_client(args)
    for src, dst in pairs:
        volume = read_volume(str(src), series=args.series)
        result = (
            apply_on_server(client, args, volume, probe, pp)
            if client
            else pipeline.apply(volume, probe, postprocess=pp)
        )
        plan.written(write_segmentation(result, dst))  # one by one: an interrupted run's outputs stay ours
        _log_written(result, dst)
    return 0


def _apply_pairs(args: argparse.Namespace, plan) -> list[tuple[Path, Path]]:
    """(image, output) of each case; a folder of images gives OUT/<name>_seg.nii.gz per image."""
    from ..errors import InputError
    from ..files.output_ledger import own_output
    from ..files.probe_paths import probe_paths
    from ..imaging.formats import IMAGE_SUFFIXES, has_suffix
    from ..segment.files import OUTPUT_SUFFIXES

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
    from ..segment.files import OUTPUT_SUFFIXES

    plan = output_plan(args)
    if args.labels:
        plan.input(args.image, args.labels)
        plan.output(args.out, "--out", suffixes=OUTPUT_SUFFIXES, kind=kinds.SEGMENTATION)
        if args.save_probe:
            plan.probe_outputs(args.save_probe, "--save-probe", kind=kinds.SEGMENTATION_PROBE)
        plan.check()
        return _fit(args, plan)
    if args.save_probe:
        from ..errors import InputError

        raise InputError(
            f"--save-probe saves a probe fitted from --labels; with --probe nothing new is fitted ({args.probe} "
            "is the probe already). Drop --save-probe, or copy the probe files to keep another copy."
        )
    pairs = _apply_pairs(args, plan)
    plan.check()
    return _apply(args, plan, pairs)


@command("segment", run)
def arguments(p: argparse.ArgumentParser) -> None:
    """few-shot segmentation from sparse labels, or apply a saved segmentation probe"""
    p.add_argument("image", help="CT file, DICOM series folder, or (with --probe) a folder of CT files")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--labels", help="sparse label image (0 / 1..254 / 255)")
    src.add_argument("--probe", help="saved segmentation probe (NAME, NAME.json or NAME.safetensors)")
    p.add_argument(
        "--out", required=True, help="output .nii.gz / .nrrd / .seg.nrrd (a folder with an image folder)"
    )
    p.add_argument(
        "--save-probe", default=None, help="also save the fitted probe as NAME(.json/.safetensors)"
    )
    p.add_argument(
        "--painted-slices",
        action="store_true",
        help="labels are fully painted axial slices: slices with any structure are fully labelled",
    )
    p.add_argument("--class-names", default=None, help="comma-separated names for labels 1..K")
    p.add_argument(
        "--no-intensity", action="store_true", help="patch features only (no local intensity features)"
    )
    p.add_argument(
        "--largest-component", action="store_true", help="keep the largest component of each class"
    )
    p.add_argument("--fill-holes", action="store_true", help="fill enclosed holes of each class")
    p.add_argument(
        "--feature-spacing",
        type=options.float_above(0.0, 20.0),
        default=None,
        help="extract features from an isotropic resampling at this spacing (mm), e.g. 1.5 for 3 mm CT",
    )
    add_series_arg(p)
    add_overwrite_arg(p)
    add_model_and_feature_args(p)
    add_server_arg(p)
