"""`voxelfm segment IMAGE (--labels LABELS | --probe PROBE) --out OUT`: few-shot or saved-probe segmentation.

LABELS: 0 background, 1..254 structures, 255 unlabelled, on any grid aligned with IMAGE in physical space
(``--painted-slices``: label files where unpainted voxels are 0 on the painted slices and 0 elsewhere too;
only slices holding a structure count). OUT: .nii.gz / .nii / .nrrd labelmap on IMAGE's grid, or .seg.nrrd.
With --probe, IMAGE may be a folder of images; OUT is then a folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_feature_args, add_model_args, log


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "segment",
        help="few-shot segmentation from sparse labels, or apply a saved segmentation probe",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
        type=float,
        default=None,
        help="extract features from an isotropic resampling at this spacing (mm), e.g. 1.5 for 3 mm CT",
    )
    add_model_args(p)
    add_feature_args(p)
    p.set_defaults(func=run)


def _output_ok(path: Path) -> None:
    from ..errors import InputError
    from ..segment.io_helpers import LABELMAP_SUFFIXES, has_suffix

    if not (has_suffix(path, (".seg.nrrd",)) or has_suffix(path, LABELMAP_SUFFIXES)):
        raise InputError(f"--out must end with .nii.gz, .nii, .nrrd, .mha or .seg.nrrd; got {path.name}.")


def _features(volume, model, args):
    from ..features.extract import extract_features
    from ..progress import TqdmProgress
    from ..segment.io_helpers import resample_for_features
    from .common import preprocess_from_args

    src = resample_for_features(volume, args.feature_spacing) if args.feature_spacing else volume
    bar = TqdmProgress("features")
    try:
        return extract_features(
            src,
            model,
            preprocess=preprocess_from_args(model, args),
            max_tokens=args.max_tokens,
            overlap=args.overlap,
            device=args.device,
            progress=bar,
            cache=not args.no_cache,
        )
    finally:
        bar.close()


def _write(result, probe, out: Path) -> None:
    from ..imaging.io import write_labelmap
    from ..segment.io_helpers import has_suffix, write_seg_nrrd

    if has_suffix(out, (".seg.nrrd",)):
        segs = list(zip(probe.class_values, probe.class_names, probe.class_colors, strict=True))
        write_seg_nrrd(result.labelmap, result.ijk_to_ras, out, segs)
    else:
        write_labelmap(result.labelmap, result.ijk_to_ras, out)
    counts = {
        n: int((result.labelmap == v).sum())
        for v, n in zip(probe.class_values, probe.class_names, strict=True)
    }
    log.info("wrote %s (voxels per class: %s)", out, counts)


def _postprocess(args):
    from ..segment.postprocess import PostprocessConfig

    return PostprocessConfig(largest_component=args.largest_component, fill_holes=args.fill_holes)


def _fit(args, out: Path) -> int:
    from ..errors import InputError
    from ..imaging.io import read_volume
    from ..imaging.volume import Volume
    from ..segment.api import SegmentationConfig, SegmentationContext, fit_segmentation
    from ..segment.io_helpers import read_label_volume
    from ..segment.labels import painted_slices_to_labels
    from ..segment.probe_file import save_segmentation_probe
    from ..segment.voxel_features import IntensityConfig
    from .common import load_model_from_args

    volume = read_volume(args.image)
    labels = read_label_volume(args.labels)
    if args.painted_slices:
        if (labels.array == 255).any():
            raise InputError(
                "--painted-slices expects 0 for unpainted voxels, but the label image contains 255."
            )
        labels = Volume(painted_slices_to_labels(labels.array, axis=0), labels.ijk_to_ras, labels.name)
    model = load_model_from_args(args)
    feats = _features(volume, model, args)
    cfg = SegmentationConfig(
        intensity=IntensityConfig(enabled=not args.no_intensity),
        postprocess=_postprocess(args),
        feature_spacing_mm=args.feature_spacing,
    )
    names = None
    if args.class_names:
        names = {n: s.strip() for n, s in enumerate(args.class_names.split(","), start=1)}
    ctx = SegmentationContext(volume, feats)
    probe = fit_segmentation(volume, feats, labels, cfg, class_names=names, context=ctx)
    log.info("fitted probe: %s", {k: v for k, v in probe.metrics.items() if k != "warnings"})
    result = probe.predict(volume, feats, context=ctx, with_probabilities=False)
    _write(result, probe, out)
    if args.save_probe:
        st, js = save_segmentation_probe(probe, args.save_probe)
        log.info("saved probe %s + %s", js, st.name)
    return 0


def _apply(args, out: Path) -> int:
    from ..errors import InputError
    from ..imaging.io import read_volume
    from ..segment.io_helpers import IMAGE_SUFFIXES, has_suffix
    from ..segment.probe_file import load_segmentation_probe
    from .common import load_model_from_args

    probe = load_segmentation_probe(args.probe)
    if args.model is None and probe.model.get("id"):
        args.model = probe.model["id"]
    if args.feature_spacing is None:
        args.feature_spacing = (
            probe.config.feature_spacing_mm
        )  # extract features the way the probe was fitted
    image = Path(args.image)
    files = sorted(f for f in image.iterdir() if has_suffix(f, IMAGE_SUFFIXES)) if image.is_dir() else []
    if (
        files
        and not has_suffix(out, (".seg.nrrd",))
        and has_suffix(out, (".nii.gz", ".nii", ".nrrd", ".mha"))
    ):
        raise InputError(f"{image} is a folder of images: --out must be a folder, got {out.name}.")
    model = load_model_from_args(args) if probe.patch_weight is not None else None
    pairs = [(f, out / (f.name.split(".")[0] + "_seg.nii.gz")) for f in files] if files else [(image, out)]
    if not files:
        _output_ok(out)
    for src, dst in pairs:
        volume = read_volume(str(src))
        feats = _features(volume, model, args) if model is not None else None
        pp = _postprocess(args) if (args.largest_component or args.fill_holes) else None
        result = probe.predict(volume, feats, with_probabilities=False, postprocess=pp)
        _write(result, probe, dst)
    return 0


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if args.labels:
        _output_ok(out)
        if Path(args.labels).resolve() == out.resolve():
            from ..errors import InputError

            raise InputError("--out must not be the --labels file (inputs are never overwritten).")
        return _fit(args, out)
    return _apply(args, out)
