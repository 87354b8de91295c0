"""Turn one volume's features (cls, registers, patch grid) into a probe input.

Vector poolings give one vector per volume (linear / MLP / kNN probes); token poolings give a
[tokens, C] matrix for the attentive probe. Features can be a ``VolumeFeatures`` or anything with
``cls`` [C], ``registers`` [R, C], ``patch`` [d, h, w, C] attributes or dict keys.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ..errors import InputError

VECTOR_POOLINGS = ("cls", "mean", "cls+mean", "registers", "cls+registers", "all")
TOKEN_POOLINGS = ("tokens", "tokens+cls")
POOLINGS = VECTOR_POOLINGS + TOKEN_POOLINGS


def _get(features: Any, name: str) -> np.ndarray | None:
    value = features.get(name) if isinstance(features, dict) else getattr(features, name, None)
    if value is None:
        return None
    if hasattr(value, "detach"):  # torch tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float32)


def feature_parts(features: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cls [C], registers [R, C], patch tokens [N, C]) of one volume, validated."""
    cls = _get(features, "cls")
    patch = _get(features, "patch")
    registers = _get(features, "registers")
    if cls is None or patch is None:
        raise InputError(
            "Features need 'cls' and 'patch' arrays (a VolumeFeatures from voxelfm.features.extract_features)."
        )
    cls = cls.reshape(-1)
    c = cls.size
    if patch.shape[-1] != c:
        raise InputError(
            f"Patch features have {patch.shape[-1]} channels but cls has {c}; features are corrupt."
        )
    tokens = patch.reshape(-1, c)
    registers = np.zeros((0, c), np.float32) if registers is None else registers.reshape(-1, c)
    if tokens.shape[0] == 0:
        raise InputError("Features have no patch tokens; the volume is smaller than one patch.")
    return cls, registers, tokens


def check_pooling(pooling: str) -> str:
    if pooling not in POOLINGS:
        raise InputError(f"Unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}.")
    return pooling


def is_token_pooling(pooling: str) -> bool:
    return check_pooling(pooling) in TOKEN_POOLINGS


def pool(features: Any, pooling: str) -> np.ndarray:
    """Vector [D] for vector poolings, token matrix [T, C] for token poolings (float32)."""
    check_pooling(pooling)
    cls, registers, tokens = feature_parts(features)
    reg_mean = registers.mean(axis=0) if registers.shape[0] else np.zeros_like(cls)
    if pooling == "cls":
        out = cls
    elif pooling == "mean":
        out = tokens.mean(axis=0)
    elif pooling == "cls+mean":
        out = np.concatenate([cls, tokens.mean(axis=0)])
    elif pooling == "registers":
        if registers.shape[0] == 0:
            raise InputError("Pooling 'registers' needs register tokens, but these features have none.")
        out = reg_mean
    elif pooling == "cls+registers":
        out = np.concatenate([cls, reg_mean])
    elif pooling == "all":
        out = np.concatenate([cls, reg_mean, tokens.mean(axis=0)])
    elif pooling == "tokens":
        out = tokens
    else:  # tokens+cls
        out = np.concatenate([cls[None], registers, tokens], axis=0)
    out = np.ascontiguousarray(out, dtype=np.float32)
    if not np.all(np.isfinite(out)):
        raise InputError(
            "Features contain NaN or infinite values; re-extract them (delete the feature cache)."
        )
    return out


def pool_all(features: Iterable[Any], pooling: str) -> np.ndarray | list[np.ndarray]:
    """Stack vectors to [N, D]; token poolings stay a list of [T_i, C] (token counts may differ).

    ``features`` may be a generator: each volume's features are pooled, then dropped, before the next."""
    pooled = [pool(f, pooling) for f in features]
    if is_token_pooling(pooling):
        return pooled
    dims = {p.shape[0] for p in pooled}
    if len(dims) > 1:
        raise InputError(
            f"Feature vectors have different sizes {sorted(dims)}; were they made by different models?"
        )
    return np.stack(pooled) if pooled else np.zeros((0, 0), np.float32)
