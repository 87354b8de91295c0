"""Shared pytest fixtures: paths to the shared data/fixtures beside the checkout, small models."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# VoxelFMLib (Slicer logic layer) sits beside the voxelfm package but is not pip-installed.
if str(REPO / "VoxelFMExtension") not in sys.path:
    sys.path.insert(0, str(REPO / "VoxelFMExtension"))

pytest_plugins = ["mrml_scene"]
SHARED = Path(os.environ.get("VOXELFM_SHARED", REPO.parent / "shared"))
PARITY = SHARED / "fixtures" / "voxelfm_parity"
DATA = SHARED / "data"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared test data not found: {path} (set VOXELFM_SHARED)")
    return path


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    return _need(PARITY)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return _need(DATA)


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path_factory, monkeypatch):
    """Never touch the user's real caches from tests; never reach the network."""
    root = tmp_path_factory.getbasetemp() / "caches"
    monkeypatch.setenv("VOXELFM_CACHE_DIR", str(root / "voxelfm"))
    monkeypatch.setenv("HF_HOME", str(root / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # the Hub reachability probe (a TCP connect before downloading) must not reach the network either; tests of
    # the probe itself put back voxelfm.hub.download.connect_probe with a loopback endpoint
    monkeypatch.setattr("voxelfm.hub.download.probe", lambda host, port, timeout: "")


@pytest.fixture
def server_thread_count():
    """The test process computes with one torch thread while it runs, as the test servers do (server_harness
    starts them with OMP_NUM_THREADS=1): bit-identical results need the same summation order on both sides."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
