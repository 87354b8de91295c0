"""One optimiser step: accumulated micro-batches -> loss parts (global mean) -> clipping -> AdamW -> EMA teacher.

Shared by the training loop and the step benchmark, so both time exactly the same work.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from . import distributed as dd
from . import sharding
from .config import PretrainConfig
from .meta_arch import SSLMetaArch
from .optim import apply_schedule


def _autocast(cfg: PretrainConfig, dev: torch.device) -> contextlib.AbstractContextManager:
    if dev.type == "cuda" and cfg.compute_precision in ("auto", "bf16"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _to(batch: dict[str, torch.Tensor], dev: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(dev, non_blocking=True) for k, v in batch.items()}


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
