"""`voxelfm features IMAGE --out FEATURES.npz`: frozen features of one CT (+ an optional PCA picture)."""

from __future__ import annotations

import argparse

from ..files import file_kinds as kinds
from .common import add_model_and_feature_args, add_series_arg, command, log, spec_and_options
from .outputs import add_overwrite_arg, output_plan
from .remote import add_server_arg, features_on_server, server_client


def run(args: argparse.Namespace) -> int:
    from ..features.service import FeaturePipeline
    from ..imaging.io import read_volume
    from ..progress import TqdmProgress

    plan = output_plan(args).input(args.image)
    out = plan.output(args.out, "--out", suffixes=(".npz",), kind=kinds.FEATURES)
    png = (
        plan.output(args.png, "--png", suffixes=(".png",), kind=kinds.FEATURES_PICTURE) if args.png else None
    )
    plan.check()
    volume = read_volume(args.image, series=args.series)
    client = server_client(args)
    pipeline = FeaturePipeline(*spec_and_options(args))
    bar = TqdmProgress("features")
    try:
        feats = (
            features_on_server(client, args, volume, bar)
            if client
            else pipeline.volume_features(
                volume, preprocess=pipeline.model_preprocess(pipeline.spec), progress=bar
            )
        )
    finally:
        bar.close()
    plan.written(feats.save(out))
    log.info(
        "wrote %s: patch grid %s x %d channels, %s tiles",
        out,
        feats.grid_shape,
        feats.patch.shape[-1],
        feats.extraction.get("tiles", "cached"),
    )
    if png is not None:
        from ..imaging.pictures import feature_overview_png

        log.info("wrote %s", feature_overview_png(volume, feats.patch, feats.grid_to_ras, png))
    plan.done()
    return 0


@command("features", run)
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
