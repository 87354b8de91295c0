"""FSDP2 pretraining (``train.sharding: fsdp2``) through torchrun with two gloo processes on CPU.

One uninterrupted 4-step FSDP2 run is shared by the tests: its outputs load, it matches a DDP run with the
same seed (same global batch, so only the float reduction order may differ), and a 2 + 2 step resumed
FSDP2 run reproduces it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from test_pretrain_distributed import _free_port
from test_pretrain_run import TINY, ct_folder  # noqa: F401  (fixture)

from voxelfm.errors import InputError
from voxelfm.pretrain.checkpointing import list_checkpoints, load_latest
from voxelfm.pretrain.config import load_config

STEPS = 4


def _torchrun() -> str:
    exe = Path(sys.executable).with_name("torchrun")
    if exe.exists():
        return str(exe)
    if shutil.which("torchrun") is None:
        pytest.skip("torchrun not installed")
    return "torchrun"


def _config(folder: Path, sharding: str) -> Path:
    p = folder / f"tiny_{sharding}.yaml"
    p.write_text(
        yaml.safe_dump({**TINY, "train": {**TINY["train"], "batch_size_per_gpu": 1, "sharding": sharding}})
    )
    return p


def _run(data: Path, cfg: Path, out: Path, steps: int, cache: Path, resume: bool = False) -> None:
    """``voxelfm pretrain`` on 2 processes; the cache folder is explicit (module fixtures run before the
    per-test cache isolation)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VOXELFM_CACHE_DIR": str(cache)}
    cmd = [_torchrun(), "--nproc_per_node", "2", "--master_port", str(_free_port()), "-m", "voxelfm.cli"]
    cmd += ["pretrain", "--data", str(data), "--config", str(cfg), "--out", str(out)]
    cmd += ["--steps", str(steps), "--no-progress"] + (["--resume"] if resume else [])
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def fsdp_run(ct_folder, tmp_path_factory) -> Path:  # noqa: F811
    root = tmp_path_factory.mktemp("fsdp")
    out = root / "run"
    _run(ct_folder, _config(root, "fsdp2"), out, STEPS, root / "cache")
    return out


@pytest.mark.slow  # two fresh interpreters + gloo rendezvous
def test_fsdp2_run_writes_loadable_outputs(fsdp_run):
    from voxelfm.model.checkpoint import load_backbone_file

    assert [s for s, _ in list_checkpoints(fsdp_run)] == [2, 4]
    ck = load_latest(fsdp_run)
    assert ck["world_size"] == 2 and len(ck["rng"]) == 2 and ck["step"] == STEPS
    assert ck["config"]["train"]["sharding"] == "fsdp2"
    # full, plain tensors in the single-file format (no DTensor shards)
    assert all(type(v) is torch.Tensor for v in ck["model"].values())
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    assert sorted(ck["optimizer"]["state"]) == list(range(len(ck["optimizer"]["state"])))
    assert len((fsdp_run / "metrics.jsonl").read_text().splitlines()) == STEPS
    exported = load_backbone_file(fsdp_run / "backbone").state_dict()
    from_ckpt = load_backbone_file(list_checkpoints(fsdp_run)[-1][1]).state_dict()
    teacher = {
        k[len("teacher.backbone.") :]: v for k, v in ck["model"].items() if k.startswith("teacher.backbone.")
    }
    assert exported.keys() == teacher.keys()
    assert all(
        torch.equal(exported[k], teacher[k]) and torch.equal(from_ckpt[k], teacher[k]) for k in exported
    )
    with torch.no_grad():
        f = load_backbone_file(fsdp_run / "backbone").forward_features(torch.randn(1, 1, 28, 28, 28))
    assert torch.isfinite(f["patch"]).all()


@pytest.mark.slow
def test_fsdp2_matches_ddp(fsdp_run, ct_folder, tmp_path):  # noqa: F811
    out = tmp_path / "ddp"
    _run(ct_folder, _config(tmp_path, "ddp"), out, STEPS, tmp_path / "cache")
    a, b = load_latest(fsdp_run), load_latest(out)
    assert a["model"].keys() == b["model"].keys()
    diff = max((a["model"][k].float() - b["model"][k].float()).abs().max().item() for k in a["model"])
    assert diff < 1e-5, f"FSDP2 vs DDP max parameter difference {diff:.3g}"
    # the same optimizer layout, so each can resume the other's checkpoint
    oa, ob = a["optimizer"], b["optimizer"]
    assert [{k: v for k, v in g.items()} for g in oa["param_groups"]] == ob["param_groups"]
    assert oa["state"].keys() == ob["state"].keys()
    for i in oa["state"]:
        assert oa["state"][i].keys() == ob["state"][i].keys()
        assert torch.allclose(oa["state"][i]["exp_avg"], ob["state"][i]["exp_avg"], atol=1e-6)
        assert torch.equal(oa["state"][i]["step"], ob["state"][i]["step"])
    la = [json.loads(x)["loss"] for x in (fsdp_run / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert la == pytest.approx(lb, abs=1e-5)


@pytest.mark.slow
def test_fsdp2_resume_is_exact(fsdp_run, ct_folder, tmp_path):  # noqa: F811
    cfg, out = _config(tmp_path, "fsdp2"), tmp_path / "resumed"
    _run(ct_folder, cfg, out, 2, tmp_path / "cache")
    _run(ct_folder, cfg, out, STEPS, tmp_path / "cache", resume=True)
    a, b = load_latest(fsdp_run), load_latest(out)
    assert b["step"] == STEPS
    diff = [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])]
    assert not diff, f"parameters differ after resume: {diff[:5]}"
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)


def test_bad_sharding_is_rejected():
    with pytest.raises(InputError, match="train.sharding='zero3'.*'ddp' or 'fsdp2'"):
        load_config(None, {"train": {"sharding": "zero3"}})
