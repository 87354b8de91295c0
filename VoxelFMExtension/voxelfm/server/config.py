"""Settings of one `voxelfm serve` process (limits, folders, devices, timeouts)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ServerConfig:
    keys_file: Path
    data_dir: Path  # volumes/ (store), features/ (feature cache), jobs/ (job records); may be shared storage
    devices: list[str] = field(default_factory=lambda: ["auto"])  # one worker queue each
    max_upload_bytes: int = 2 * 1024**3  # one request body (a compressed volume)
    max_voxels: int = 512 * 512 * 2000  # one volume or label grid
    store_bytes: int = 50 * 1024**3  # volume store budget on disk (least recently used evicted beyond it)
    cache_bytes: int = 100 * 1024**3  # feature cache budget on disk (least recently used removed beyond it)
    max_queued_per_key: int = 4  # queued + running jobs of one API key
    abandon_after_s: float = 60.0  # a job nobody polled for this long is cancelled (the client went away)
    keep_results_s: float = 600.0  # a finished job's result is dropped after this long
    memory_volumes: int = 4  # decoded volumes kept in memory (refits skip decoding)
    libraries: dict[str, Path] = field(default_factory=dict)  # case library id -> folder (server.libraries)

    @property
    def volumes_dir(self) -> Path:
        return self.data_dir / "volumes"

    @property
    def features_dir(self) -> Path:
        """The feature cache (``FeatureCache`` under VOXELFM_CACHE_DIR = data_dir, set by `voxelfm serve`)."""
        return self.data_dir / "features"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"
