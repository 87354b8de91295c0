"""torch.distributed from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK); single process otherwise."""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_rank() -> int:
    """This process's rank as torchrun set it (0 alone), readable before the process group is joined."""
    return int(os.environ.get("RANK", "0"))


def init_from_env(device_type: str) -> DistInfo:
    """Join the process group torchrun set up (gloo on CPU, nccl on GPU); no-op for a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local, False)
    dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return DistInfo(rank, world, local, True)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def gather_objects(info: DistInfo, obj: Any) -> list[Any]:
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def all_reduce_mean_dict(info: DistInfo, values: dict[str, float]) -> dict[str, float]:
    """Mean of scalar metrics over ranks (a NaN anywhere stays NaN, so every rank stops together).

    Ranks may report different keys (``ibot_teacher_entropy`` is absent without masked tokens): the key
    sets are gathered first so every rank reduces a tensor of the same length (else gloo/nccl hang), and
    each key is averaged over the ranks that have it.
    """
    if not info.enabled:
        return values
    keys = sorted(set().union(*gather_objects(info, sorted(values))))
    t = torch.tensor([[values.get(k, 0.0), float(k in values)] for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return {k: float(s) / n for k, (s, n) in zip(keys, t.tolist(), strict=True) if n > 0}


def shutdown(info: DistInfo) -> None:
    """Destroy the process group we created. Collect garbage first: FSDP2 modules sit in reference cycles
    (hooks) and hold the group; freed only at interpreter exit, after the group, they can abort the process."""
    if info.initialized_here and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()
