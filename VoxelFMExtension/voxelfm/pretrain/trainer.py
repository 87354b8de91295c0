"""The pretraining loop shared by ``voxelfm pretrain``, the Slicer script and torchrun (one code path).

Per step: schedules -> teacher targets -> student forward/backward (grad accumulation, DDP) -> per-module
gradient clipping -> AdamW -> EMA teacher. Rank 0 logs (tqdm, metrics.jsonl, loss.png), writes atomic
checkpoints every ``checkpointing.period`` steps and exports the teacher backbone at the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..errors import CancelledError, CheckpointError, InputError, VoxelFMError
from ..progress import CancelFlag, ProgressFn, check_cancel, no_progress
from . import distributed as dd
from . import sharding
from .checkpointing import list_checkpoints, load_latest, save_checkpoint
from .config import PretrainConfig, load_config
from .data import Collate, CropDataset, StepBatchSampler, build_cache, discover_sources
from .meta_arch import SSLMetaArch
from .metrics import MetricsLog, plot_loss
from .optim import apply_schedule, build_optimizer, build_param_groups
from .schedules import Schedules

log = logging.getLogger(__name__)


@dataclass
class PretrainResult:
    out_dir: Path
    start_step: int
    final_step: int
    last_loss: float | None
    checkpoint: Path | None
    backbone_dir: Path | None


def _select_device(device: str, dist_local_rank: int) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", dist_local_rank)
    return dev


def _rng_state() -> dict[str, Any]:
    """All RNG states, as plain types and tensors so the checkpoint loads with ``weights_only=True``."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss))
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    keys = keys.numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
    np.random.set_state((name, keys.astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _autocast(cfg: PretrainConfig, dev: torch.device) -> contextlib.AbstractContextManager:
    if dev.type == "cuda" and cfg.compute_precision in ("auto", "bf16"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _to(batch: dict[str, torch.Tensor], dev: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(dev, non_blocking=True) for k, v in batch.items()}


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
    out = Path(out)
    dev = _select_device(device, 0)
    info = dd.init_from_env(dev.type)
    dev = _select_device(device, info.local_rank)
    try:
        return _run(cfg, Path(data), out, steps, resume, dev, info, export_hub, progress, cancel, show_bar)
    finally:
        dd.shutdown(info)


def _run(cfg, data, out, steps, resume, dev, info, export_hub, progress, cancel, show_bar) -> PretrainResult:
    total = cfg.total_iterations
    stop = min(int(steps), total) if steps is not None else total
    if stop < 1:
        raise InputError(f"--steps must be >= 1 (got {steps}).")
    sources = discover_sources(data)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if list_checkpoints(out) and not resume:
            raise InputError(
                f"{out} already holds checkpoints; pass --resume to continue, or choose a new --out."
            )
        volumes = build_cache(
            sources, cfg, progress=lambda f, m: progress(0.05 * f, m), strict=data.is_file()
        )
    dd.barrier(info)
    if not info.is_main:
        volumes = build_cache(sources, cfg, strict=data.is_file())  # cache hits only

    torch.manual_seed(cfg.train.seed)  # identical init on every rank
    meta = SSLMetaArch(cfg).to(dev)
    fsdp = cfg.train.sharding == "fsdp2" and info.enabled
    if fsdp:  # before the optimizer: it must hold the sharded parameters
        sharding.shard_meta(meta, dev, info.world_size)
    elif cfg.train.sharding == "fsdp2" and info.is_main:
        log.info("train.sharding=fsdp2 with one process: nothing to shard, training unsharded.")
    groups = build_param_groups(
        meta.student.backbone,
        {k: m for k, m in meta.student.named_children() if k != "backbone"},
        cfg.student.depth,
        cfg.optim,
    )
    opt = build_optimizer(groups, cfg.optim)
    random.seed(cfg.train.seed + info.rank)
    np.random.seed(cfg.train.seed + info.rank)
    torch.manual_seed(cfg.train.seed + info.rank)  # stochastic depth differs per rank

    start = 0
    ckpt = load_latest(out) if resume else None
    if ckpt is not None:
        try:
            if fsdp:
                sharding.load_full_state(meta, opt, ckpt["model"], ckpt["optimizer"])
            else:
                meta.load_state_dict(ckpt["model"])
                opt.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(
                f"The checkpoint in {out} does not match this config ({str(exc).splitlines()[0][:200]}). Resume "
                f"with the run's own config ({out / 'config.yaml'}) or start a new --out."
            ) from exc
        rngs = ckpt["rng"]
        if len(rngs) != info.world_size:
            log.warning(
                "Checkpoint from %d process(es), resuming on %d: RNG streams restart.",
                len(rngs),
                info.world_size,
            )
        else:
            _set_rng_state(rngs[info.rank])
        start = int(ckpt["step"])
        if info.is_main:
            log.info("Resuming from step %d", start)
    elif resume and info.is_main:
        log.info("--resume: no checkpoint in %s yet, starting from step 0", out)
    del ckpt
    if start >= stop and info.is_main:
        log.info("Already at step %d (target %d): nothing to train, exporting the teacher.", start, stop)
    stop = max(stop, start)

    student = meta.student
    if info.enabled and not fsdp:
        student = torch.nn.parallel.DistributedDataParallel(
            meta.student, device_ids=[dev.index] if dev.type == "cuda" else None
        )
    sched = Schedules(cfg)
    micro = cfg.train.grad_accum_steps
    bs = cfg.train.batch_size_per_gpu
    loader = DataLoader(
        CropDataset(volumes, cfg),
        batch_sampler=StepBatchSampler(bs, start, info.rank, info.world_size, micro),
        collate_fn=Collate(cfg),
        num_workers=cfg.train.num_workers,
        pin_memory=dev.type == "cuda",
        persistent_workers=False,
        # Own generator: creating the iterator must not consume the global torch RNG (exact resume).
        generator=torch.Generator().manual_seed(cfg.train.seed + info.rank),
    )
    metrics = MetricsLog(out / "metrics.jsonl", start) if info.is_main else None
    if info.is_main:
        import yaml

        from ..files.atomic import atomic_write_text

        atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    bar = None
    if info.is_main and show_bar:
        from tqdm.auto import tqdm

        bar = tqdm(total=stop, initial=start, desc="pretrain", dynamic_ncols=True)

    meta.train()
    it = iter(loader)
    last_loss, ckpt_path = None, None
    samples_per_step = bs * micro * info.world_size
    step = start
    try:
        for step in range(start, stop):
            check_cancel(cancel)
            t0 = time.perf_counter()
            s = sched.at(step)
            parts_sum = train_step(meta, student, opt, s, [next(it) for _ in range(micro)], cfg, dev, info)
            if not np.isfinite(parts_sum["loss"]):
                raise VoxelFMError(
                    f"Loss became non-finite at step {step}; lower schedules.lr.peak or optim.clip_grad and resume."
                )
            done = step + 1
            dt = time.perf_counter() - t0
            last_loss = parts_sum["loss"]
            if info.is_main:
                rec = {
                    "step": done,
                    **{k: round(v, 6) for k, v in parts_sum.items()},
                    "lr": s["lr"],
                    "wd": s["wd"],
                    "momentum": s["momentum"],
                    "teacher_temp": s["teacher_temp"],
                    "step_time_s": round(dt, 4),
                    "samples_per_s": round(samples_per_step / dt, 3),
                }
                metrics.append(rec)
                if bar is not None:
                    bar.set_postfix(
                        loss=f"{last_loss:.4f}", lr=f"{s['lr']:.2e}", vol_s=f"{samples_per_step / dt:.2f}"
                    )
                    bar.update(1)
                progress(
                    0.05 + 0.9 * (done - start) / max(stop - start, 1),
                    f"step {done}/{stop} loss {last_loss:.4f}",
                )
            if done % cfg.checkpointing.period == 0 or done == stop:
                ckpt_path = _checkpoint(meta, opt, cfg, out, done, info, metrics)
    except CancelledError:
        if bar is not None:
            bar.close()
        saved = ckpt_path is not None and ckpt_path.name == f"step_{step:08d}.pt"
        if step > start and not saved and not info.enabled:  # keep the finished steps: --resume continues
            _checkpoint(meta, opt, cfg, out, step, info, metrics)
        raise
    except BaseException:
        if bar is not None:
            bar.close()
        raise
    if bar is not None:
        bar.close()
    backbone_dir = None
    export = meta
    if fsdp:  # gather the teacher (all ranks) into an unsharded copy that rank 0 exports
        full, _ = sharding.full_state(meta, opt)
        export = _unsharded_copy(cfg, full) if info.is_main else meta
    if info.is_main:
        plot_loss(metrics.records, out / "loss.png")
        backbone_dir = export_teacher(export, cfg, out / "backbone", step=stop)
        if export_hub:
            export_hub_folder(export, cfg, Path(export_hub), step=stop)
        progress(1.0, f"done: {stop} steps")
    dd.barrier(info)
    return PretrainResult(out, start, stop, last_loss, ckpt_path, backbone_dir)


def train_step(
    meta: SSLMetaArch,
    student: torch.nn.Module,
    opt: torch.optim.Optimizer,
    s: dict[str, float],
    batches: list[dict[str, torch.Tensor]],
    cfg: PretrainConfig,
    dev: torch.device,
    info: dd.DistInfo,
) -> dict[str, float]:
    """One optimiser step over ``len(batches)`` accumulated micro-batches; returns mean loss parts (all ranks).

    ``student`` is ``meta.student`` (FSDP2-sharded or not) or its DDP wrapper. Skips the update when the
    loss is not finite.
    """
    apply_schedule(opt, s["lr"], s["wd"], s["last_layer_lr_factor"])
    opt.zero_grad(set_to_none=True)
    micro = len(batches)
    parts_sum: dict[str, float] = {"loss": 0.0}
    for m, batch in enumerate(batches):
        batch = _to(batch, dev)
        last = m == micro - 1
        sync = contextlib.nullcontext()
        if sharding.is_sharded(student):  # FSDP2: accumulate unsharded grads, reduce-scatter on the last
            student.set_requires_gradient_sync(last)
        elif info.enabled and not last:
            sync = student.no_sync()
        with sync:
            with _autocast(cfg, dev):
                loss, parts = meta.losses(batch, s["teacher_temp"], student)
            (loss / micro).backward()
        parts_sum["loss"] += float(loss.detach()) / micro
        for k, v in parts.items():
            parts_sum[k] = parts_sum.get(k, 0.0) + v / micro
    parts_sum = dd.all_reduce_mean_dict(info, parts_sum)  # the global-batch mean, identical on all ranks
    if not np.isfinite(parts_sum["loss"]):
        return parts_sum
    if sharding.is_sharded(meta.teacher):
        sharding.reshard(meta.teacher)
    if cfg.optim.clip_grad:
        for mod in meta.student.children():  # per module, as the reference does
            torch.nn.utils.clip_grad_norm_(mod.parameters(), cfg.optim.clip_grad)
    opt.step()
    meta.update_teacher(s["momentum"])
    return parts_sum


def _checkpoint(
    meta: SSLMetaArch,
    opt,
    cfg: PretrainConfig,
    out: Path,
    step: int,
    info: dd.DistInfo,
    metrics: MetricsLog | None,
) -> Path | None:
    rngs = dd.gather_objects(info, _rng_state())
    if sharding.is_sharded(meta.student):  # collective: every rank sends its shards, rank 0 gets them all
        model_sd, optim_sd = sharding.full_state(meta, opt)
    elif info.is_main:
        model_sd, optim_sd = meta.state_dict(), opt.state_dict()
    path = None
    if info.is_main:
        state = {
            "model": model_sd,
            "optimizer": optim_sd,
            "rng": rngs,
            "config": cfg.to_dict(),
            "world_size": info.world_size,
        }
        path = save_checkpoint(out, step, state, cfg.checkpointing.max_to_keep, cfg.checkpointing.keep_every)
        try:
            plot_loss(metrics.records if metrics else [], out / "loss.png")
        except Exception as exc:  # plotting must never stop training
            log.warning("Could not update loss.png: %s", exc)
    dd.barrier(info)
    return path


def _export_meta(cfg: PretrainConfig, step: int) -> tuple[dict, dict]:
    ds = cfg.datasets[0]
    meta = {
        "source": "voxelfm pretrain",
        "step": step,
        "crops": cfg.to_dict()["crops"],
        "spacing_mm": cfg.data.spacing_mm,
    }
    pre = {"clip_hu": [ds.pixel_range.lower, ds.pixel_range.upper], "mean": ds.norm.mean, "std": ds.norm.std}
    if cfg.data.spacing_mm is not None:
        # Trained at this isotropic spacing: inference resamples to it too (PreprocessConfig.min_spacing),
        # so patch tokens cover the same physical size as in pretraining.
        pre["min_spacing"] = float(cfg.data.spacing_mm)
    return meta, pre


def _unsharded_copy(cfg: PretrainConfig, full_state: dict[str, torch.Tensor]) -> SSLMetaArch:
    """A plain CPU SSLMetaArch holding a gathered full state (what the exports read under FSDP2)."""
    plain = SSLMetaArch(
        dataclasses.replace(cfg, student=dataclasses.replace(cfg.student, pretrained_weights=""))
    )
    plain.load_state_dict(full_state)
    return plain


def export_teacher(meta: SSLMetaArch, cfg: PretrainConfig, out_dir: Path, step: int) -> Path:
    """The EMA teacher's backbone in our safetensors format (loadable by ``load_backbone``)."""
    from ..model.checkpoint import save_backbone

    m, pre = _export_meta(cfg, step)
    return save_backbone(meta.teacher.backbone, out_dir, meta=m, preprocess=pre)


def export_hub_folder(meta: SSLMetaArch, cfg: PretrainConfig, out_dir: Path, step: int) -> Path:
    """Hub-style folder: model.safetensors + config.json + README.md (model card)."""
    from ..files.atomic import atomic_write_text

    export_teacher(meta, cfg, out_dir, step)
    st = cfg.student
    card = (
        "---\nlibrary_name: voxelfm\ntags: [ct, 3d, self-supervised, dinov2]\n---\n"
        f"# VoxelFM backbone (pretrained {step} steps)\n\n"
        f"3D ViT: embed_dim {st.embed_dim}, depth {st.depth}, heads {st.num_heads}, patch {st.patch_size}, "
        f"{st.num_register_tokens} registers, 3D RoPE. Teacher (EMA) weights from DINO + iBOT + KoLeo pretraining.\n\n"
        "Load with `voxelfm.load_backbone(path)`.\n"
    )
    atomic_write_text(out_dir / "README.md", card)
    return out_dir
