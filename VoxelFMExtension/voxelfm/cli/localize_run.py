"""What `localize_cmd.py` runs: its handlers, imported only when the command runs (``common.deferred``), so
`voxelfm --help` does not load torch or the pipelines."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from ..files import file_kinds as kinds
from ..imaging.file_checks import check_label_map
from ..imaging.io import read_volume
from ..localize.boxes import box_from_labelmap, box_from_points
from ..localize.config import TransferConfig
from ..localize.manifest import read_localisation_manifest
from ..localize.markups_json import read_point_list, write_point_list, write_roi
from ..localize.pipeline import LocalisationPipeline, Reference
from ..localize.probe import ProbeConfig
from ..localize.probe_file import load_localisation_probe, save_localisation_probe
from ..localize.template import LandmarkTemplate
from ..progress import TqdmProgress
from .common import log, spec_and_options
from .outputs import output_plan
from .remote_run import localize_on_server, localize_probe_on_server, server_client


def _config(args: argparse.Namespace):
    kw = {}
    if args.refine:
        kw["refine"] = args.refine
    if args.feature_spacing:
        kw["feature_spacing_mm"] = args.feature_spacing
    if args.no_geometry:
        kw.update(frame_weight=0.0, consistency=False)
    return TransferConfig(**kw)


def _pipeline(args: argparse.Namespace, config=None):
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
    if args.template:
        return [LandmarkTemplate.load(t) for t in args.template], [Path(t) for t in args.template]
    refs, inputs = [], []
    for image, points in args.reference:
        pts = read_point_list(points)
        refs.append(Reference(read_volume(image), pts))
        inputs += [Path(image), Path(points)]
    return refs, inputs


def run_localize(args: argparse.Namespace) -> int:
    out = Path(args.out)
    client = server_client(args)
    if args.probe:
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
    out = Path(args.out)
    if getattr(args, "server", None):
        log.info("a box is geometry on this computer: nothing to send to %s", args.server)
    if args.labels:
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
