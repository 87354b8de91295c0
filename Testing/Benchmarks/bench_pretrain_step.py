"""Pretraining step time and peak memory for a config (synthetic crops; optional crop-pipeline timing).

Usage:
  python Testing/Benchmarks/bench_pretrain_step.py --config VoxelFMTraining/configs/voxelfm_tiny.yaml \
      [--steps 5] [--warmup 2] [--device auto] [--threads 2] [--set train.batch_size_per_gpu=4 ...]

Prints one table row per config: backbone size, tokens per crop, per-step time (median and min over the
timed steps; model forward/backward + optimiser + EMA, data excluded; on a shared machine the min is the
better estimate of the uncontended speed), samples/s (from the median), peak memory, and the CPU time to make one sample's crops from a
cached 256x256x192 volume (what DataLoader workers must sustain). No timed asserts.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "VoxelFMExtension"))

from voxelfm.device import pick_device  # noqa: E402
from voxelfm.pretrain import distributed as dd  # noqa: E402
from voxelfm.pretrain.config import load_config  # noqa: E402
from voxelfm.pretrain.crops import MultiCrop  # noqa: E402
from voxelfm.pretrain.data import Collate  # noqa: E402
from voxelfm.pretrain.meta_arch import SSLMetaArch  # noqa: E402
from voxelfm.pretrain.optim import build_student_optimizer  # noqa: E402
from voxelfm.pretrain.schedules import Schedules  # noqa: E402
from voxelfm.pretrain.step import train_step  # noqa: E402


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", action="append", default=None, help="YAML config (repeat for several rows)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = pick_device(args.device)
    print(f"device {dev}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    hdr = (
        f"{'config':28s} {'params':>7s} {'E/d/h':>10s} {'glob/loc':>9s} {'tok g/l':>8s} {'B':>2s} {'nL':>3s} "
        f"{'step_s':>7s} {'min_s':>6s} {'samp/s':>7s} {'peak_MB':>8s} {'crops_s':>7s}"
    )
    print(hdr)
    print("-" * len(hdr))
    for cfg_path in args.config or [None]:
        cfg = load_config(cfg_path, list(args.overrides))
        row(cfg, cfg_path, dev, args.steps, args.warmup)


def row(cfg, cfg_path, dev: torch.device, steps: int, warmup: int) -> None:
    torch.manual_seed(0)
    meta = SSLMetaArch(cfg).to(dev)
    opt = build_student_optimizer(meta, cfg)
    sched = Schedules(cfg)
    info = dd.DistInfo()
    b, nl = cfg.train.batch_size_per_gpu, cfg.crops.local_crops_number
    g, loc = tuple(cfg.crops.global_crops_size), tuple(cfg.crops.local_crops_size)
    # synthetic batch with the real collation (masks) so the iBOT path costs what it costs in training
    vol = np.random.default_rng(0).normal(-300, 400, size=(192, 256, 256)).astype(np.float32)
    crop = MultiCrop(cfg)
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    samples = []
    for i in range(b):
        s = crop(vol, rng)
        s["draw"] = i
        samples.append(s)
    crop_s = (time.perf_counter() - t) / b
    batch = Collate(cfg)(samples)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    meta.train()
    times = []
    for i in range(warmup + steps):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()
        parts = train_step(
            meta, meta.student, opt, sched.at(1000 + i), [batch] * cfg.train.grad_accum_steps, cfg, dev, info
        )
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    assert np.isfinite(parts["loss"])
    step = statistics.median(times)
    peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else _rss_mb()
    n_params = sum(p.numel() for p in meta.student.backbone.parameters()) / 1e6
    st = cfg.student
    p = st.patch_size
    tok = f"{int(np.prod([x // p for x in g]))}/{int(np.prod([x // p for x in loc]))}"
    name = Path(cfg_path).name if cfg_path else "defaults"
    nsamp = b * cfg.train.grad_accum_steps
    print(
        f"{name[:28]:28s} {n_params:6.2f}M {f'{st.embed_dim}/{st.depth}/{st.num_heads}':>10s} "
        f"{f'{g[0]}/{loc[0]}':>9s} {tok:>8s} {b:2d} {nl:3d} {step:7.3f} {min(times):6.3f} {nsamp / step:7.2f} {peak:8.0f} "
        f"{crop_s:7.3f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
