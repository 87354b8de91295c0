"""Frozen VoxelFM features of a CT volume, with geometry, tiling, progress/cancel and a disk cache.

``extract_features`` = prepare (reference preprocessing, geometry kept) -> backbone forward (one pass, or
overlapping tiles when the patch grid exceeds ``max_tokens``) -> ``VolumeFeatures`` whose ``grid_to_ras``
maps patch-cell centres (i along W', j along H', k along D') to RAS mm.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

import numpy as np
import torch

from ..device import autocast_for, pick_device, resolve_precision
from ..errors import InputError
from ..imaging.preprocess import PreprocessConfig, prepare
from ..imaging.resample import patch_grid_to_ras
from ..imaging.volume import Volume
from ..progress import CancelFlag, ProgressFn, check_cancel, no_progress
from .cache import FeatureCache
from .tiling import blend_weights, default_max_tokens, plan_tiles
from .volume_features import VolumeFeatures

log = logging.getLogger(__name__)


def default_preprocess_for(model: torch.nn.Module):
    """The preprocessing the model was trained with (from its config), else the reference defaults."""
    return PreprocessConfig.from_dict(
        getattr(model, "preprocess_defaults", {}) or {}, orientation="canonical"
    )


def model_identity(model: torch.nn.Module) -> dict[str, Any]:
    info = dict(getattr(model, "model_info", {}) or {})
    if not info.get("sha256"):
        # An in-memory model without provenance: identify it by its weights so caches never mix models.
        h = hashlib.sha256()
        for k, v in sorted(model.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().float().numpy().tobytes())
        info.setdefault("id", "in-memory")
        info["sha256"] = h.hexdigest()
    cfg = getattr(model, "cfg", None)
    if cfg is not None and hasattr(cfg, "to_dict"):
        info["config"] = cfg.to_dict()
    return info


def extract_features(
    volume: Volume,
    model: torch.nn.Module,
    preprocess: Any = None,
    max_tokens: int | None = None,
    overlap: int = 2,
    device: str | torch.device = "auto",
    precision: str = "auto",
    progress: ProgressFn | None = None,
    cancel: CancelFlag | None = None,
    cache: bool | FeatureCache = True,
) -> VolumeFeatures:
    """Features of ``volume``; a repeated request with the same inputs is served from the disk cache.

    ``precision`` (auto | fp32 | bf16) is resolved for the device first (``device.resolve_precision``) and the
    resolved value is part of the cache key and of ``extraction``: fp32 and bf16 features never mix.
    """
    progress = progress or no_progress
    dev, resolved, max_tokens = _run_settings(device, precision, max_tokens)
    cfg = preprocess if preprocess is not None else default_preprocess_for(model)
    ident = model_identity(model)
    store = cache if isinstance(cache, FeatureCache) else (FeatureCache() if cache else None)
    key = None
    if store is not None:
        key = store.key(
            volume.content_hash(),
            ident,
            cfg.to_dict(),
            {"max_tokens": max_tokens, "overlap": overlap, "precision": resolved},
        )
        hit = store.get(key)
        if hit is not None:
            progress(1.0, "features loaded from cache")
            return hit
    check_cancel(cancel)
    progress(0.0, "preprocessing")
    prepared = prepare(volume, cfg)
    feats = forward_prepared(
        model,
        prepared.normalized(),
        max_tokens,
        overlap,
        dev,
        resolved,
        lambda f, m: progress(0.05 + 0.95 * f, m),
        cancel,
    )
    ps = model.patch_size
    feats.grid_to_ras = patch_grid_to_ras(prepared.prepared_to_ras, ps)
    feats.prepared_to_ras = np.asarray(prepared.prepared_to_ras, dtype=np.float64)
    feats.prepared_shape = tuple(int(s) for s in prepared.array.shape)
    feats.model = ident
    feats.preprocess = cfg.to_dict()
    if store is not None and key is not None:
        store.put(key, feats)
    progress(1.0, "features ready")
    return feats


@torch.inference_mode()
def forward_prepared(
    model: torch.nn.Module,
    normalized: np.ndarray,
    max_tokens: int | None = None,
    overlap: int = 2,
    device: str | torch.device = "auto",
    precision: str = "auto",
    progress: ProgressFn | None = None,
    cancel: CancelFlag | None = None,
) -> VolumeFeatures:
    """Run the backbone over a prepared, normalised [D,H,W] array (tiled when over ``max_tokens``; None = the
    machine's default budget, ``tiling.default_max_tokens``)."""
    progress = progress or no_progress
    dev, resolved, max_tokens = _run_settings(device, precision, max_tokens)
    model = model.to(dev).eval()
    ps = model.patch_size
    arr = np.asarray(normalized, dtype=np.float32)
    if arr.ndim != 3 or any(s % ps or s == 0 for s in arr.shape):
        raise InputError(f"Prepared array must be 3-D with sides multiple of {ps}, got {arr.shape}.")
    grid = tuple(s // ps for s in arr.shape)
    tiles = plan_tiles(grid, max_tokens, overlap)  # type: ignore[arg-type]
    c = model.embed_dim
    acc = np.zeros((*grid, c), dtype=np.float32)
    wsum = np.zeros(grid, dtype=np.float32)
    cls_acc = np.zeros(c, dtype=np.float64)
    reg_acc = np.zeros((model.num_register_tokens, c), dtype=np.float64)
    total_tokens = 0
    t0 = time.perf_counter()
    for ti, tile in enumerate(tiles):
        check_cancel(cancel)
        sub = torch.from_numpy(np.ascontiguousarray(arr[tile.slices(ps)]))[None, None].to(dev)

        def on_block(i: int, n: int, ti: int = ti) -> None:
            check_cancel(cancel)
            progress((ti + i / n) / len(tiles), f"tile {ti + 1}/{len(tiles)}, block {i}/{n}")

        with autocast_for(dev, resolved):
            out = model.forward_features(sub, on_block=on_block)
        patch = out["patch"][0].float().cpu().numpy()
        n_tok = int(np.prod(tile.size))
        if len(tiles) == 1:
            acc, wsum = patch, np.ones(grid, dtype=np.float32)
        else:
            w = blend_weights(tile.size, overlap)
            acc[tile.slices()] += patch * w[..., None]
            wsum[tile.slices()] += w
        cls_acc += out["cls"][0].float().cpu().numpy().astype(np.float64) * n_tok
        reg_acc += out["registers"][0].float().cpu().numpy().astype(np.float64) * n_tok
        total_tokens += n_tok
    patch_grid = acc if len(tiles) == 1 else acc / wsum[..., None]
    return VolumeFeatures(
        cls=(cls_acc / total_tokens).astype(np.float32),
        registers=(reg_acc / total_tokens).astype(np.float32),
        patch=np.ascontiguousarray(patch_grid, dtype=np.float32),
        grid_to_ras=np.eye(4),
        extraction={
            "tiles": len(tiles),
            "tile_cells": list(tiles[0].size),
            "max_tokens": max_tokens,
            "overlap": overlap,
            "device": str(dev),
            "precision": resolved,
            "seconds": round(time.perf_counter() - t0, 3),
        },
    )


def _run_settings(
    device: str | torch.device, precision: str, max_tokens: int | None
) -> tuple[torch.device, str, int]:
    """(device, precision resolved for it, token budget), decided in one place because the cache key of
    ``extract_features`` and the ``extraction`` record of ``forward_prepared`` must describe the same run."""
    dev = pick_device(device)
    budget = default_max_tokens() if max_tokens is None else int(max_tokens)
    return dev, resolve_precision(precision, dev), budget
