"""The pretraining run shared by ``voxelfm pretrain``, the Slicer script and torchrun (one code path).

A run goes through named phases: device and process group, data cache, model + optimizer, resume, the
step loop, export, teardown. Per step (``step.train_step``): schedules -> teacher targets -> student
forward/backward (grad accumulation, DDP or FSDP2) -> per-module gradient clipping -> AdamW -> EMA teacher.
Rank 0 logs (tqdm, metrics.jsonl, loss.png), writes atomic checkpoints every ``checkpointing.period``
steps and exports the teacher backbone at the end.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader

from ..device import pick_device
from ..errors import CancelledError, InputError, VoxelFMError
from ..files.atomic import atomic_write_text
from ..progress import CancelFlag, ProgressFn, check_cancel, no_progress
from . import distributed as dd
from . import sharding
from .checkpointing import list_checkpoints, load_latest
from .config import PretrainConfig, load_config
from .data import CachedVolume, Collate, CropDataset, StepBatchSampler, build_cache, discover_sources
from .export import export_hub_folder, export_teacher, unsharded_copy
from .meta_arch import SSLMetaArch
from .metrics import plot_loss
from .optim import build_student_optimizer
from .schedules import Schedules
from .step import train_step
from .step_log import DATA_SHARE, StepLog
from .train_state import restore_train_state, save_train_state

log = logging.getLogger(__name__)

__all__ = ["PretrainResult", "RunOptions", "run", "run_pretraining", "train_step"]


@dataclass
class RunOptions:
    """What a run is asked to do, apart from the model/optimisation config."""

    data: Path  # folder of CTs, one CT file, or a CSV/JSONL manifest
    out: Path  # run folder: checkpoints/, metrics.jsonl, loss.png, config.yaml, backbone/
    steps: int | None = None  # absolute target step; None = optim.epochs * train.official_epoch_length
    resume: bool = False
    device: str = "auto"
    export_hub: Path | None = None
    progress: ProgressFn = no_progress
    cancel: CancelFlag | None = None
    show_bar: bool = True


@dataclass
class PretrainResult:
    out_dir: Path
    start_step: int
    final_step: int
    last_loss: float | None
    checkpoint: Path | None
    backbone_dir: Path | None


@dataclass
class _Context:
    """What every phase reads: the config, the options, this process's device and its place in the group."""

    cfg: PretrainConfig
    opts: RunOptions
    dev: torch.device
    info: dd.DistInfo


@dataclass
class _Model:
    """The SSL pair and its optimizer; ``student`` is what forward/backward goes through (DDP wrapper or not)."""

    meta: SSLMetaArch
    opt: torch.optim.Optimizer
    fsdp: bool
    student: torch.nn.Module


@dataclass
class _LoopResult:
    last_loss: float | None
    checkpoint: Path | None


def run_pretraining(
    data: str | Path,
    config: str | Path | PretrainConfig | None,
    out: str | Path,
    steps: int | None = None,
    resume: bool = False,
    overrides: dict[str, Any] | list[str] | None = None,
    device: str = "auto",
    export_hub: str | Path | None = None,
    progress: ProgressFn = no_progress,
    cancel: CancelFlag | None = None,
    show_bar: bool = True,
) -> PretrainResult:
    """Pretrain until ``steps`` (default: optim.epochs * train.official_epoch_length); see module docstring."""
    cfg = config if isinstance(config, PretrainConfig) else load_config(config, overrides)
    opts = RunOptions(
        data=Path(data),
        out=Path(out),
        steps=steps,
        resume=resume,
        device=device,
        export_hub=Path(export_hub) if export_hub else None,
        progress=progress,
        cancel=cancel,
        show_bar=show_bar,
    )
    return run(cfg, opts)


def run(cfg: PretrainConfig, opts: RunOptions) -> PretrainResult:
    """One run: join the process group, train, and always leave the group again."""
    dev, info = _setup_device(opts.device)
    try:
        return _train(_Context(cfg, opts, dev, info))
    finally:
        dd.shutdown(info)


def _train(ctx: _Context) -> PretrainResult:
    stop = _target_step(ctx.cfg, ctx.opts.steps)
    volumes = _prepare_data(ctx)
    model = _build_model(ctx)
    start = _resume(ctx, model)
    if start >= stop and ctx.info.is_main:
        log.info("Already at step %d (target %d): nothing to train, exporting the teacher.", start, stop)
    stop = max(stop, start)
    _wrap_student(ctx, model)
    loader = _make_loader(ctx, volumes, start)
    _write_run_config(ctx)
    step_log = StepLog(
        ctx.opts.out,
        start,
        stop,
        _samples_per_step(ctx),
        ctx.opts.progress,
        enabled=ctx.info.is_main,
        show_bar=ctx.opts.show_bar,
    )
    try:
        loop = _step_loop(ctx, model, loader, start, stop, step_log)
    finally:
        step_log.close()
    backbone_dir = _export(ctx, model, stop, step_log)
    dd.barrier(ctx.info)
    return PretrainResult(ctx.opts.out, start, stop, loop.last_loss, loop.checkpoint, backbone_dir)


# --- set-up -------------------------------------------------------------------------------------------


def _setup_device(device: str) -> tuple[torch.device, dd.DistInfo]:
    """The device choice shared with inference, then the process group torchrun set up (if any)."""
    dev = pick_device(device)
    info = dd.init_from_env(dev.type)
    return _on_local_rank(dev, info.local_rank), info


def _on_local_rank(dev: torch.device, local_rank: int) -> torch.device:
    """torchrun starts one process per GPU: a bare ``cuda`` means this process's GPU, ``LOCAL_RANK``."""
    if dev.type == "cuda" and dev.index is None:
        return torch.device("cuda", local_rank)
    return dev


def _target_step(cfg: PretrainConfig, steps: int | None) -> int:
    total = cfg.total_iterations
    stop = min(int(steps), total) if steps is not None else total
    if stop < 1:
        raise InputError(f"--steps must be >= 1 (got {steps}).")
    return stop


def _prepare_data(ctx: _Context) -> list[CachedVolume]:
    """Rank 0 fills the volume cache (and guards the run folder); the other ranks then read cache hits."""
    data, out, info = ctx.opts.data, ctx.opts.out, ctx.info
    sources = discover_sources(data)
    strict = data.is_file()  # a manifest names its files: a non-CT among them is an error
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if list_checkpoints(out) and not ctx.opts.resume:
            raise InputError(
                f"{out} already holds checkpoints; pass --resume to continue, or choose a new --out."
            )
        progress = ctx.opts.progress
        volumes = build_cache(
            sources, ctx.cfg, progress=lambda f, m: progress(DATA_SHARE * f, m), strict=strict
        )
    dd.barrier(info)
    if not info.is_main:
        volumes = build_cache(sources, ctx.cfg, strict=strict)  # cache hits only
    return volumes


def _build_model(ctx: _Context) -> _Model:
    """Identical initial weights on every rank, then per-rank RNG streams (stochastic depth differs)."""
    cfg, info = ctx.cfg, ctx.info
    torch.manual_seed(cfg.train.seed)
    meta = SSLMetaArch(cfg).to(ctx.dev)
    fsdp = cfg.train.sharding == "fsdp2" and info.enabled
    if fsdp:  # before the optimizer: it must hold the sharded parameters
        sharding.shard_meta(meta, ctx.dev, info.world_size)
    elif cfg.train.sharding == "fsdp2" and info.is_main:
        log.info("train.sharding=fsdp2 with one process: nothing to shard, training unsharded.")
    opt = build_student_optimizer(meta, cfg)
    seed = cfg.train.seed + info.rank
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return _Model(meta, opt, fsdp, student=meta.student)


def _resume(ctx: _Context, model: _Model) -> int:
    """The step to continue from: the latest checkpoint's with --resume (state restored), else 0."""
    out, info = ctx.opts.out, ctx.info
    ckpt = load_latest(out) if ctx.opts.resume else None
    if ckpt is None:
        if ctx.opts.resume and info.is_main:
            log.info("--resume: no checkpoint in %s yet, starting from step 0", out)
        return 0
    start = restore_train_state(ckpt, model.meta, model.opt, info, out)
    if info.is_main:
        log.info("Resuming from step %d", start)
    return start


def _wrap_student(ctx: _Context, model: _Model) -> None:
    """DDP wraps the student after resume (it broadcasts rank 0's weights); FSDP2 already shards it."""
    if ctx.info.enabled and not model.fsdp:
        dev = ctx.dev
        model.student = torch.nn.parallel.DistributedDataParallel(
            model.meta.student, device_ids=[dev.index] if dev.type == "cuda" else None
        )


def _samples_per_step(ctx: _Context) -> int:
    t = ctx.cfg.train
    return t.batch_size_per_gpu * t.grad_accum_steps * ctx.info.world_size


def _make_loader(ctx: _Context, volumes: list[CachedVolume], start: int) -> DataLoader:
    """Batches of step ``start`` onwards for this rank (the loader position is the step number)."""
    cfg, info = ctx.cfg, ctx.info
    return DataLoader(
        CropDataset(volumes, cfg),
        batch_sampler=StepBatchSampler(
            cfg.train.batch_size_per_gpu, start, info.rank, info.world_size, cfg.train.grad_accum_steps
        ),
        collate_fn=Collate(cfg),
        num_workers=cfg.train.num_workers,
        pin_memory=ctx.dev.type == "cuda",
        persistent_workers=False,
        # Own generator: creating the iterator must not consume the global torch RNG (exact resume).
        generator=torch.Generator().manual_seed(cfg.train.seed + info.rank),
    )


def _write_run_config(ctx: _Context) -> None:
    """config.yaml in the run folder: what --resume should be given."""
    if not ctx.info.is_main:
        return

    atomic_write_text(ctx.opts.out / "config.yaml", yaml.safe_dump(ctx.cfg.to_dict(), sort_keys=False))


# --- the step loop ------------------------------------------------------------------------------------


def _step_loop(
    ctx: _Context, model: _Model, loader: DataLoader, start: int, stop: int, step_log: StepLog
) -> _LoopResult:
    """Steps ``start`` .. ``stop - 1``, checkpointing every period and at the end.

    A cancel keeps the finished steps (single process: a checkpoint at the cancelled step) so --resume
    continues from there.
    """
    cfg = ctx.cfg
    sched = Schedules(cfg)
    model.meta.train()
    it = iter(loader)
    result = _LoopResult(None, None)
    step = start
    try:
        for step in range(start, stop):
            check_cancel(ctx.opts.cancel)
            t0 = time.perf_counter()
            s = sched.at(step)
            parts = _one_step(ctx, model, s, it, step)
            done = step + 1
            result.last_loss = parts["loss"]
            step_log.step(done, parts, s, time.perf_counter() - t0)
            if done % cfg.checkpointing.period == 0 or done == stop:
                result.checkpoint = _save(ctx, model, done, step_log)
    except CancelledError:
        step_log.close()
        saved = result.checkpoint is not None and result.checkpoint.name == f"step_{step:08d}.pt"
        if step > start and not saved and not ctx.info.enabled:
            _save(ctx, model, step, step_log)
        raise
    return result


def _one_step(ctx: _Context, model: _Model, s: dict[str, float], it: Any, step: int) -> dict[str, float]:
    batches = [next(it) for _ in range(ctx.cfg.train.grad_accum_steps)]
    parts = train_step(model.meta, model.student, model.opt, s, batches, ctx.cfg, ctx.dev, ctx.info)
    if not np.isfinite(parts["loss"]):
        raise VoxelFMError(
            f"Loss became non-finite at step {step}; lower schedules.lr.peak or optim.clip_grad and resume."
        )
    return parts


def _save(ctx: _Context, model: _Model, step: int, step_log: StepLog) -> Path | None:
    return save_train_state(model.meta, model.opt, ctx.cfg, ctx.opts.out, step, ctx.info, step_log.records)


# --- export -------------------------------------------------------------------------------------------


def _export(ctx: _Context, model: _Model, stop: int, step_log: StepLog) -> Path | None:
    """Rank 0 writes loss.png and the teacher backbone (and the hub folder); FSDP2 gathers it first."""
    cfg, info = ctx.cfg, ctx.info
    export = model.meta
    if model.fsdp:  # gather the teacher (all ranks) into an unsharded copy that rank 0 exports
        full, _ = sharding.full_state(model.meta, model.opt)
        export = unsharded_copy(cfg, full) if info.is_main else model.meta
    if not info.is_main:
        return None
    plot_loss(step_log.records, ctx.opts.out / "loss.png")
    backbone_dir = export_teacher(export, cfg, ctx.opts.out / "backbone", step=stop)
    if ctx.opts.export_hub:
        export_hub_folder(export, cfg, ctx.opts.export_hub, step=stop)
    ctx.opts.progress(1.0, f"done: {stop} steps")
    return backbone_dir
