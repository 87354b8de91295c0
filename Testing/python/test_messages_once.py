"""What a command prints: the model choice once, and no third-party chatter (faiss's loader) unless -v."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from voxelfm.imaging.io import write_volume
from voxelfm.imaging.volume import Volume

REPO = Path(__file__).resolve().parents[2]


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, VOXELFM_CACHE_DIR=str(tmp_path / "cache"), HF_HOME=str(tmp_path / "hf"))
    env["HF_HUB_OFFLINE"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "VoxelFMExtension"), env.get("PYTHONPATH", "")])
    return env


def test_faiss_loader_lines_only_with_debug_logging(tmp_path):
    code = (
        "import logging, sys; logging.basicConfig(level=getattr(logging, sys.argv[1]), format='%(name)s %(message)s')\n"
        "from voxelfm.retrieval.vector_index import _faiss; _faiss()"
    )
    runs = {
        level: subprocess.run(
            [sys.executable, "-c", code, level],
            capture_output=True,
            text=True,
            env=_env(tmp_path),
            check=True,
        ).stderr
        for level in ("INFO", "DEBUG")
    }
    assert "faiss.loader" not in runs["INFO"], runs["INFO"]
    assert "faiss.loader" in runs["DEBUG"]  # still there for `voxelfm -v`


def test_default_model_fallback_is_said_once(tmp_path, monkeypatch, caplog):
    """Online but the Hub unreachable, official weights not cached: one line says the bundled model is used."""
    import logging

    from voxelfm.cli.main import main

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("voxelfm.hub.download.probe", lambda host, port, timeout: "unreachable in this test")
    from voxelfm.features import service

    monkeypatch.setattr(
        service, "_SERVICE", type(service._SERVICE)(service.FeatureService)
    )  # a fresh process-wide one
    ct = np.full((12, 40, 40), -800.0, dtype=np.float32)
    ct[4:8, 10:30, 10:30] = 40.0
    write_volume(Volume(ct, np.diag([2.0, 2.0, 3.0, 1.0])), tmp_path / "ct.nrrd")
    with caplog.at_level(logging.INFO):
        assert main(["features", str(tmp_path / "ct.nrrd"), "--out", str(tmp_path / "f.npz")]) == 0
    said = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.INFO and "voxelfm-vitb" in r.getMessage()
    ]
    assert len(said) == 1 and "voxelfm-tiny" in said[0], said
