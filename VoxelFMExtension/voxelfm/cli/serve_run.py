"""What `serve_cmd.py` runs: its handlers, imported only when the command runs (``common.deferred``), so
`voxelfm --help` does not load torch or the pipelines."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..errors import InputError
from ..files.locations import cache_root
from ..server.auth import read_keys
from ..server.config import ServerConfig
from .common import log
from .serve_cmd import MB


def run(args: argparse.Namespace) -> int:
    try:  # the server extra is optional: the CLI must start without it
        import uvicorn  # the server extra (optional)

        from ..server.app import create_app  # FastAPI: the server extra
        from ..server.libraries import read_libraries  # pydantic: the server extra
    except ModuleNotFoundError as exc:
        raise InputError(
            f'`voxelfm serve` needs the server extra ({exc.name} is missing): pip install "voxelfm[server]".'
        ) from None

    read_keys(Path(args.keys))  # a missing or empty keys file is an error before binding
    data = Path(args.data).expanduser() if args.data else cache_root()
    # the feature cache lives beside the volume store, in data/features
    os.environ["VOXELFM_CACHE_DIR"] = str(data)
    config = ServerConfig(
        keys_file=Path(args.keys),
        data_dir=data,
        devices=[d.strip() for d in args.devices.split(",") if d.strip()],
        max_upload_bytes=int(args.max_upload_mb * MB),
        max_voxels=args.max_voxels,
        store_bytes=int(args.store_gb * 1024 * MB),
        cache_bytes=int(args.cache_gb * 1024 * MB),
        max_queued_per_key=args.max_jobs_per_key,
        abandon_after_s=args.abandon_after,
        libraries=read_libraries(Path(args.libraries) if args.libraries else None),
    )
    app = create_app(config)
    log.info(
        "VoxelFM server on http://%s:%d (data %s, devices %s)", args.host, args.port, data, config.devices
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_keep_alive=30)
    return 0
