"""`voxelfm features IMAGE --out FEATURES.npz`: frozen features of one CT (+ an optional PCA picture)."""

from __future__ import annotations

import argparse

from .common import add_model_and_feature_args, add_series_arg, command, deferred
from .outputs import add_overwrite_arg
from .remote import add_server_arg


@command("features", deferred("features_run", "run"))
def arguments(p: argparse.ArgumentParser) -> None:
    """extract VoxelFM features of a CT

    Write cls [C], registers [R,C], patch [D',H',W',C] and grid_to_ras (4x4, patch-cell (i,j,k,1) -> RAS
    mm, i along W') to an .npz.
    """
    p.add_argument("image", help="NIfTI / NRRD / MHA file or a DICOM series folder")
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument(
        "--png", default=None, help="also write a picture: CT slices with PCA colours of the features"
    )
    add_series_arg(p)
    add_overwrite_arg(p)
    add_model_and_feature_args(p)
    add_server_arg(p)
