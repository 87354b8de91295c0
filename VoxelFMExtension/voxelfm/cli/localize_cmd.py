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

from . import options
from .common import add_model_and_feature_args, command, deferred
from .outputs import add_overwrite_arg
from .remote import add_server_arg

MARKUPS_SUFFIXES = (".mrk.json", ".json")


def markups_path(text: str) -> str:
    """A .mrk.json / .json file name (checked at parse time)."""
    if not text.lower().endswith(MARKUPS_SUFFIXES):
        raise argparse.ArgumentTypeError(f"{text!r} must end in .mrk.json (a Slicer markups file)")
    return text


@command("localize", deferred("localize_run", "run_localize"))
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


@command("box", deferred("localize_run", "run_box"), description=None)
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
