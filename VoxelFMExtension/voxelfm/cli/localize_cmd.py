"""`voxelfm localize` (landmarks from references or a probe), `voxelfm box` (ROIs) and the localisation branch
of `voxelfm fit-probe`.

    voxelfm localize IMAGE --reference REF_IMAGE REF_POINTS.mrk.json [--reference ...] --out OUT.mrk.json
    voxelfm localize IMAGE --template T.npz [--template ...] --out OUT.mrk.json
    voxelfm localize IMAGE --probe PROBE --out OUT.mrk.json
    voxelfm box (--labels LABELS --label N | --points POINTS.mrk.json [--corners A,B]) --out ROI.mrk.json

OUT is a Slicer markups point list (LPS, as Slicer writes it): one control point per reference point (one
per distinct name), labelled with the reference's label, its description "confidence 0.NN" (0..1); a point
expected outside IMAGE is written with Slicer's position status "missing" (and named as not found).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..files import file_kinds as kinds
from . import options
from .common import add_model_and_feature_args, command, log, spec_and_options
from .outputs import add_overwrite_arg, output_plan
from .remote import add_server_arg, localize_on_server, localize_probe_on_server, server_client

MARKUPS_SUFFIXES = (".mrk.json", ".json")


def markups_path(text: str) -> str:
    """A .mrk.json / .json file name (checked at parse time)."""
    if not text.lower().endswith(MARKUPS_SUFFIXES):
        raise argparse.ArgumentTypeError(f"{text!r} must end in .mrk.json (a Slicer markups file)")
    return text


def _config(args: argparse.Namespace):
    from ..localize.config import TransferConfig

    kw = {}
    if args.refine:
        kw["refine"] = args.refine
    if args.feature_spacing:
        kw["feature_spacing_mm"] = args.feature_spacing
    if args.no_geometry:
        kw.update(frame_weight=0.0, consistency=False)
    return TransferConfig(**kw)


def _pipeline(args: argparse.Namespace, config=None):
    from ..localize.pipeline import LocalisationPipeline

    spec, feature_options = spec_and_options(args)
    return LocalisationPipeline(spec, config, feature_options)


def _check_out(
    args: argparse.Namespace,
    out: Path,
    inputs: list[Path],
    extra: tuple[Path, ...] = (),
    kind: str = kinds.LANDMARKS,
):
    """The shared output rules (voxelfm.files.outputs), checked before any work; returns the plan."""
    plan = output_plan(args).input(*inputs)
    plan.output(out, "--out", kind=kind)
    for n, path in enumerate(extra, start=1):
        plan.output(path, f"--save-template ({n})", kind=kinds.LOCALISATION_TEMPLATE)
    return plan.check()


def _references(args: argparse.Namespace):
    """Reference scans + points, all read (and checked) before any model loads."""
    from ..imaging.io import read_volume
    from ..localize.markups_json import read_point_list
    from ..localize.pipeline import Reference
    from ..localize.template import LandmarkTemplate

    if args.template:
        return [LandmarkTemplate.load(t) for t in args.template], [Path(t) for t in args.template]
    refs, inputs = [], []
    for image, points in args.reference:
        pts = read_point_list(points)
        refs.append(Reference(read_volume(image), pts))
        inputs += [Path(image), Path(points)]
    return refs, inputs


def run_localize(args: argparse.Namespace) -> int:
    from ..imaging.io import read_volume
    from ..localize.markups_json import write_point_list
    from ..progress import TqdmProgress

    out = Path(args.out)
    client = server_client(args)
    if args.probe:
        from ..localize.probe_file import load_localisation_probe

        plan = _check_out(args, out, [Path(args.image), Path(args.probe)])
        target = read_volume(args.image)
        probe = load_localisation_probe(args.probe)
        bar = TqdmProgress("localize")
        try:
            if client:
                result = localize_probe_on_server(client, args, target, probe, bar)
            else:
                result = _pipeline(args).apply_probe(target, probe, bar)
        finally:
            bar.close()
    else:
        inputs = [Path(args.image), *(Path(t) for t in args.template or ())]
        inputs += [Path(f) for pair in args.reference or () for f in pair]
        n_refs = len(args.template or args.reference or ())
        saved = (
            tuple(Path(f"{args.save_template}-{n + 1}.npz") for n in range(n_refs))
            if args.save_template
            else ()
        )
        plan = _check_out(args, out, inputs, saved)
        target = read_volume(args.image)
        refs, _ = _references(args)
        pipeline = _pipeline(args, _config(args))
        bar = TqdmProgress("localize")
        try:
            if client:
                templates, result = localize_on_server(
                    client, args, target, refs, _config(args), bar, bool(saved)
                )
            else:
                templates = pipeline.templates(refs, lambda f, m: bar(0.5 * f, m))
                result = pipeline.transfer(target, templates, lambda f, m: bar(0.5 + 0.5 * f, m))
        finally:
            bar.close()
        for t, path in zip(templates, saved, strict=False):
            plan.written(t.save(path))
            log.info("saved template %s", path)
    plan.written(write_point_list(result.points, out))  # a rerun may replace its own output
    for warning in result.warnings:
        log.warning("%s", warning)
    points = result.points
    for n, name in enumerate(points.names):
        ras = [round(float(v), 1) for v in points.ras[n]]
        if points.missing[n]:
            log.warning("%s: not found (expected at RAS %s, outside the image)", name, ras)
        else:
            log.info("%s: RAS %s, confidence %.2f", name, ras, result.confidence[n])
    lost = int(points.missing.sum())
    log.info("wrote %s (%d points, %d not found, %.1f s)", out, len(points), lost, result.seconds)
    return 0


def run_box(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..localize.boxes import box_from_labelmap, box_from_points
    from ..localize.markups_json import read_point_list, write_roi

    out = Path(args.out)
    if getattr(args, "server", None):
        log.info("a box is geometry on this computer: nothing to send to %s", args.server)
    if args.labels:
        from ..imaging.file_checks import check_label_map
        from ..imaging.io import read_volume

        if args.label is None:
            raise InputError("--labels needs --label N (the label value to put a box around).")
        plan = _check_out(args, out, [Path(args.labels)], kind=kinds.BOX)
        labels = read_volume(args.labels, check_hu=False)
        values = check_label_map(labels.array, args.labels, "label map (--labels)")
        box = box_from_labelmap(values, labels.ijk_to_ras, args.label, args.name, str(args.labels))
    else:
        plan = _check_out(args, out, [Path(args.points)], kind=kinds.BOX)
        names = [n.strip() for n in args.corners.split(",")] if args.corners else None
        box = box_from_points(read_point_list(args.points), args.name, names)
    plan.written(write_roi(box.markup(), out))
    log.info("wrote %s: centre %s, size %s mm", out, box.center.round(1).tolist(), box.size.round(1).tolist())
    return 0


def run_fit_localisation(args: argparse.Namespace) -> int:
    """`voxelfm fit-probe --task localisation --manifest M --out PROBE` (manifest columns: image, points)."""
    from ..imaging.io import read_volume
    from ..localize.manifest import read_localisation_manifest
    from ..localize.markups_json import read_point_list
    from ..localize.pipeline import Reference
    from ..localize.probe import ProbeConfig
    from ..localize.probe_file import save_localisation_probe
    from ..progress import TqdmProgress

    rows = read_localisation_manifest(args.manifest)
    plan = output_plan(args).input(args.manifest, *(r.image for r in rows), *(r.points for r in rows))
    plan.probe_outputs(args.out, "--out", kind=kinds.LOCALISATION_PROBE)
    plan.check()  # before any image is read: a probe is never saved over another command's file
    cases = [Reference(read_volume(r.image), read_point_list(r.points)) for r in rows]
    config = ProbeConfig(steps=max(1, int(args.epochs)), lr=args.lr or 1e-4, seed=args.seed)
    bar = TqdmProgress("fit-probe")
    try:
        probe = _pipeline(args).fit_probe(cases, config, bar)
    finally:
        bar.close()
    st, js = save_localisation_probe(probe, args.out)
    plan.done()
    log.info("localisation probe for %s: %s", ", ".join(probe.names), probe.metrics)
    log.info("wrote %s, %s", js, st)
    return 0


@command("localize", run_localize)
def localize_arguments(p: argparse.ArgumentParser) -> None:
    """find named landmarks in a CT from reference scans with points (one-shot) or a probe"""
    p.add_argument("image", help="target CT file or DICOM series folder")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--reference",
        nargs=2,
        action="append",
        metavar=("REF_IMAGE", "REF_POINTS"),
        type=str,
        help="a reference scan and its points (.mrk.json, LPS or RAS); repeat for several references",
    )
    src.add_argument("--template", action="append", help="a saved landmark template (.npz); repeatable")
    src.add_argument("--probe", help="a localisation probe (NAME, NAME.json or NAME.safetensors)")
    p.add_argument("--out", required=True, type=markups_path, help="output point list (.mrk.json)")
    p.add_argument("--save-template", default=None, help="also save the references' templates as NAME-N.npz")
    p.add_argument(
        "--refine",
        choices=("none", "interp", "fine", "ncc", "fine+ncc"),
        default=None,
        help="sub-patch refinement (default: the benchmark's best, see `TransferConfig`)",
    )
    p.add_argument(
        "--feature-spacing",
        type=options.float_above(0.0, 20.0),
        default=None,
        help="spacing (mm) of the coarse feature pass (default: the model's, coarsened to fit)",
    )
    p.add_argument(
        "--no-geometry", action="store_true", help="appearance only: no body-frame or consistency checks"
    )
    add_model_and_feature_args(p)
    add_overwrite_arg(p)
    add_server_arg(p)


@command("box", run_box, description=None)
def box_arguments(p: argparse.ArgumentParser) -> None:
    """a markups ROI around a labelled structure or spanned by corner points"""
    grp = p.add_mutually_exclusive_group(required=True)
    grp.add_argument("--labels", help="label image (e.g. a `voxelfm segment` output)")
    grp.add_argument("--points", type=markups_path, help="point list (.mrk.json) holding the corners")
    p.add_argument(
        "--label", type=options.int_at_least(1, 65535), default=None, help="label value (with --labels)"
    )
    p.add_argument("--corners", default=None, help="comma-separated point names to use (default: all points)")
    p.add_argument("--name", default="VoxelFM box", help="ROI name")
    p.add_argument("--out", required=True, type=markups_path, help="output ROI (.mrk.json)")
    add_server_arg(p)  # accepted like every capability command; a box is geometry, always computed here
