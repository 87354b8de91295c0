"""What a training checkpoint holds and how a run returns to it: model, optimizer and every rank's RNG streams.

Restoring all three makes a resumed run reproduce an uninterrupted one step for step. The file handling
(atomic writes, ``latest.json``, pruning) lives in ``checkpointing``; this module maps trainer state to it.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError
from . import distributed as dd
from . import sharding
from .checkpointing import save_checkpoint
from .config import PretrainConfig
from .meta_arch import SSLMetaArch
from .metrics import plot_loss

log = logging.getLogger(__name__)


def rng_state() -> dict[str, Any]:
    """All RNG states, as plain types and tensors so the checkpoint loads with ``weights_only=True``."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss))
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    keys = keys.numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
    np.random.set_state((name, keys.astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_train_state(
    meta: SSLMetaArch,
    opt: torch.optim.Optimizer,
    cfg: PretrainConfig,
    out: Path,
    step: int,
    info: dd.DistInfo,
    records: list[dict[str, Any]],
) -> Path | None:
    """Checkpoint ``step`` (collective: call on every rank); rank 0 writes it and refreshes loss.png."""
    rngs = dd.gather_objects(info, rng_state())
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
            plot_loss(records, out / "loss.png")
        except Exception as exc:  # plotting must never stop training
            log.warning("Could not update loss.png: %s", exc)
    dd.barrier(info)
    return path


def restore_train_state(
    ckpt: dict[str, Any],
    meta: SSLMetaArch,
    opt: torch.optim.Optimizer,
    info: dd.DistInfo,
    out: Path,
) -> int:
    """Load a checkpoint into the (possibly sharded) model and optimizer and this rank's RNGs; its step."""
    try:
        if sharding.is_sharded(meta.student):
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
        set_rng_state(rngs[info.rank])
    return int(ckpt["step"])
