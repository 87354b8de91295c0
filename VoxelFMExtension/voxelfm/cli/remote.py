"""`--server URL` for capability commands: run the capability on a VoxelFM server instead of this computer.

The URL defaults to $VOXELFM_SERVER, the key comes from $VOXELFM_API_KEY. The command reads its inputs and
writes its outputs here as always; only the computation moves, so the outputs equal a local run on the
server's device and precision. Any client error is a VoxelFMError: one line, exit 2, nothing written.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from .common import spec_and_options

if TYPE_CHECKING:
    from ..client.client import VoxelFMClient

# The client is imported when --server is used, not at parser build: voxelfm.client.capabilities pulls in the
# segmentation and feature types and with them torch (measured: `build_parser()` 6.3 s with a top-level import
# against 0.4 s without, on the 2-core CI machine).

SERVER_ENV = "VOXELFM_SERVER"
KEY_ENV = "VOXELFM_API_KEY"


def add_server_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--server",
        default=os.environ.get(SERVER_ENV) or None,
        metavar="URL",
        help=f"compute on this VoxelFM server (`voxelfm serve`); default ${SERVER_ENV}; API key from ${KEY_ENV}",
    )


def server_client(args: argparse.Namespace) -> VoxelFMClient | None:
    """The client of ``--server``, or None to compute here."""
    url = getattr(args, "server", None)
    if not url:
        return None
    from ..client.client import VoxelFMClient, require_server_url

    return VoxelFMClient(require_server_url(url), os.environ.get(KEY_ENV))


def features_on_server(client: VoxelFMClient, args: argparse.Namespace, volume, progress=None):
    from ..client.capabilities import remote_features

    return remote_features(client, volume, *spec_and_options(args), progress)


def fit_on_server(
    client: VoxelFMClient, args: argparse.Namespace, volume, labels, classes, config, progress=None
):
    from ..client.capabilities import remote_segment_fit

    return remote_segment_fit(client, volume, labels, classes, config, *spec_and_options(args), progress)


def apply_on_server(
    client: VoxelFMClient, args: argparse.Namespace, volume, probe, postprocess, progress=None
):
    from ..client.capabilities import remote_segment_apply

    return remote_segment_apply(client, volume, probe, *spec_and_options(args), postprocess, progress)
