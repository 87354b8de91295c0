"""Two-process pretraining through torchrun (gloo on CPU) with the same CLI entry point."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from test_pretrain_run import TINY


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two fresh interpreters + gloo rendezvous: 10-30 s depending on machine load
def test_torchrun_two_processes(data_dir, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists() and shutil.which("torchrun") is None:
        pytest.skip("torchrun not installed")
    data = tmp_path / "ct"
    data.mkdir()
    os.symlink(data_dir / "totalseg" / "abdomen_3mm" / "ct.nii.gz", data / "abdomen.nii.gz")
    os.symlink(
        data_dir / "public_ct" / "elastix_lung_small" / "3DCT_lung_baseline_small.mha", data / "lung.mha"
    )
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "train": {**TINY["train"], "batch_size_per_gpu": 1}}))
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        str(torchrun if torchrun.exists() else "torchrun"),
        "--nproc_per_node",
        "2",
        "--master_port",
        str(_free_port()),
        "-m",
        "voxelfm.cli",
        "pretrain",
        "--data",
        str(data),
        "--config",
        str(cfg),
        "--out",
        str(out),
        "--steps",
        "2",
        "--no-progress",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpts = sorted((out / "checkpoints").glob("step_*.pt"))
    assert [p.name for p in ckpts] == ["step_00000002.pt"]
    ck = torch.load(ckpts[0], map_location="cpu", weights_only=False)
    assert ck["world_size"] == 2 and len(ck["rng"]) == 2 and ck["step"] == 2
    assert not torch.equal(ck["rng"][0]["torch"], ck["rng"][1]["torch"])  # per-rank streams saved
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2  # rank 0 only logs
    assert (out / "backbone" / "model.safetensors").is_file()
