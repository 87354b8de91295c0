"""`voxelfm serve --host HOST --port PORT --keys FILE`: serve VoxelFM capabilities over HTTP (OpenAPI at /docs).

FILE lists the accepted API keys, one per line (re-read when it changes). Binds 127.0.0.1 unless --host says
otherwise; put TLS in front with a reverse proxy (docs/DEPLOYMENT.md). Needs the server extra:
pip install "voxelfm[server]".
"""

from __future__ import annotations

import argparse

from . import options
from .common import command, deferred

MB = 1024**2


@command("serve", deferred("serve_run", "run"))
def arguments(p: argparse.ArgumentParser) -> None:
    """serve VoxelFM capabilities over HTTP to Slicer and scripts (API-key protected)"""
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--port", type=options.int_at_least(1, 65535), default=8000, help="port (default 8000)")
    p.add_argument("--keys", required=True, help="file of accepted API keys, one per line")
    p.add_argument(
        "--data",
        default=None,
        help="folder of the volume store and feature cache (default: the VoxelFM cache)",
    )
    p.add_argument(
        "--devices", default="auto", help="comma-separated devices, one job queue each (default auto)"
    )
    p.add_argument(
        "--max-upload-mb", type=options.float_above(0.0, 1e7), default=2048.0, help="largest request body"
    )
    p.add_argument("--max-voxels", type=options.positive_int, default=512 * 512 * 2000, help="largest volume")
    p.add_argument("--store-gb", type=options.float_above(0.0, 1e6), default=50.0, help="volume store budget")
    p.add_argument(
        "--cache-gb",
        type=options.float_above(0.0, 1e6),
        default=100.0,
        help="feature cache budget (least recently used removed beyond it; never one a running job uses)",
    )
    p.add_argument(
        "--max-jobs-per-key", type=options.positive_int, default=4, help="queued + running jobs per API key"
    )
    p.add_argument(
        "--libraries",
        default=None,
        help='JSON file {"ID": "FOLDER"} of the case libraries clients may query by id',
    )
    p.add_argument(
        "--abandon-after",
        type=options.float_above(0.0, 1e6),
        default=60.0,
        help="seconds without a poll after which a job is cancelled (its client went away)",
    )
