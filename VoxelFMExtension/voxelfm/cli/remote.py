"""`--server URL` for capability commands: run the capability on a VoxelFM server instead of this computer.

The URL defaults to $VOXELFM_SERVER, the key comes from $VOXELFM_API_KEY. The command reads its inputs and
writes its outputs here as always; only the computation moves, so the outputs equal a local run on the
server's device and precision. Any client error is a VoxelFMError: one line, exit 2, nothing written.
"""

from __future__ import annotations

import argparse
import os

# The client lives in remote_run (imported by the command handlers, never at parser build):
# voxelfm.client.capabilities pulls in the segmentation and feature types and with them torch (measured:
# `build_parser()` 6.3 s with a top-level import against 0.4 s without, on the 2-core CI machine).

SERVER_ENV = "VOXELFM_SERVER"
KEY_ENV = "VOXELFM_API_KEY"


def add_server_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--server",
        default=os.environ.get(SERVER_ENV) or None,
        metavar="URL",
        help=f"compute on this VoxelFM server (`voxelfm serve`); default ${SERVER_ENV}; API key from ${KEY_ENV}",
    )
