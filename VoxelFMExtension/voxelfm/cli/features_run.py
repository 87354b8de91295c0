"""What `features_cmd.py` runs: its handlers, imported only when the command runs (``common.deferred``), so
`voxelfm --help` does not load torch or the pipelines."""

from __future__ import annotations

import argparse

from ..features.request import FeaturesRequest
from ..features.service import FeaturePipeline
from ..files import file_kinds as kinds
from ..imaging.io import read_volume
from ..imaging.pictures import feature_overview_png
from ..progress import TqdmProgress
from .common import log, spec_and_options
from .outputs import output_plan
from .remote_run import features_on_server, server_client


def run(args: argparse.Namespace) -> int:
    plan = output_plan(args).input(args.image)
    out = plan.output(args.out, "--out", suffixes=(".npz",), kind=kinds.FEATURES)
    png = (
        plan.output(args.png, "--png", suffixes=(".png",), kind=kinds.FEATURES_PICTURE) if args.png else None
    )
    plan.check()
    volume = read_volume(args.image, series=args.series)
    client = server_client(args)
    bar = TqdmProgress("features")
    try:
        feats = (
            features_on_server(client, args, volume, bar)
            if client
            else FeaturePipeline(*spec_and_options(args)).run(FeaturesRequest(volume), bar)
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
        log.info("wrote %s", feature_overview_png(volume, feats.patch, feats.grid_to_ras, png))
    plan.done()
    return 0
