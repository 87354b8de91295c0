"""`voxelfm segment IMAGE (--labels LABELS | --probe PROBE) --out OUT`: few-shot or saved-probe segmentation.

LABELS: 0 background, 1..254 structures, 255 unlabelled, on any grid aligned with IMAGE in physical space
(``--painted-slices``: label files where unpainted voxels are 0 on the painted slices and 0 elsewhere too;
only slices holding a structure count). OUT: .nii.gz / .nii / .nrrd labelmap on IMAGE's grid, or .seg.nrrd.
With --probe, IMAGE may be a folder of images; OUT is then a folder.
"""

from __future__ import annotations

import argparse

from . import options
from .common import add_model_and_feature_args, add_series_arg, command, deferred
from .outputs import add_overwrite_arg
from .remote import add_server_arg


@command("segment", deferred("segment_run", "run"))
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
