"""What `query_cmd.py` runs: its handlers, imported only when the command runs (``common.deferred``), so
`voxelfm --help` does not load torch or the pipelines."""

from __future__ import annotations

import argparse
import json
import sys

from ..imaging.io import read_volume
from ..progress import TqdmProgress
from ..retrieval.pipeline import RetrievalPipeline
from .common import log, spec_and_options
from .outputs import output_plan
from .remote_run import query_on_server, server_client


def run(args: argparse.Namespace) -> int:
    client = server_client(args)  # LIBRARY is then a library id of the server
    plan = output_plan(args).input(None if client else args.library, args.image)
    if args.thumbnails:
        plan.run_folder(args.thumbnails, "query-thumbnails", ("hit*.png",), "--thumbnails")
    plan.check().claim_folders()
    volume = read_volume(args.image, series=args.series)
    region = args.roi.region() if args.roi is not None else None
    spec, feature_options = spec_and_options(args)
    pipeline = RetrievalPipeline(spec, options=feature_options)
    where = (lambda rec: rec.has_report) if args.with_reports else None
    bar = TqdmProgress("query", disable=args.no_progress or None)
    try:
        result = (
            query_on_server(client, args, volume, region, bar)
            if client
            else pipeline.query(args.library, volume, args.k, region, args.embedding, where, progress=bar)
        )
    finally:
        bar.close()
    if args.thumbnails:  # through a server, the server rendered them from its cases' images: written already
        if client:
            written = [hit.thumbnail for hit in result.hits if hit.thumbnail]
        else:
            written = pipeline.thumbnails(result, volume, args.thumbnails)
        log.info("wrote %d thumbnail(s) to %s", len(written), args.thumbnails)
    for warning in result.warnings:
        log.warning("%s", warning)
    if args.json:
        sys.stdout.write(json.dumps(result.to_json()) + "\n")
    else:
        sys.stdout.write(result.table() + "\n")
    sys.stdout.flush()
    return 0
