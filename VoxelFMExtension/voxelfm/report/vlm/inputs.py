"""A volume's features -> the resampler's inputs: patch tokens + their normalised grid positions, batched."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ...errors import InputError


@dataclass
class VisualTokens:
    tokens: np.ndarray  # [N, C] float32
    positions: np.ndarray  # [N, 3] patch-cell position (k, j, i) scaled to [0, 1]


def visual_tokens(features: Any) -> VisualTokens:
    """Patch tokens of a VolumeFeatures (or anything with ``patch`` [D', H', W', C])."""
    patch = np.asarray(
        getattr(features, "patch", None) if not isinstance(features, dict) else features.get("patch")
    )
    if patch.ndim != 4 or patch.shape[0] * patch.shape[1] * patch.shape[2] == 0:
        raise InputError(
            "Report model inputs need a patch-feature grid [D', H', W', C] with at least one token."
        )
    grid = np.indices(patch.shape[:3], dtype=np.float32).reshape(3, -1).T
    scale = np.maximum(np.asarray(patch.shape[:3], np.float32) - 1.0, 1.0)
    return VisualTokens(patch.reshape(-1, patch.shape[-1]).astype(np.float32), grid / scale)


def collate(items: Sequence[VisualTokens], device: torch.device | str) -> tuple[torch.Tensor, ...]:
    """(tokens [B, N_max, C], mask [B, N_max] True = real, positions [B, N_max, 3]); zero padded."""
    n_max = max(v.tokens.shape[0] for v in items)
    c = items[0].tokens.shape[1]
    tokens = torch.zeros(len(items), n_max, c)
    positions = torch.zeros(len(items), n_max, 3)
    mask = torch.zeros(len(items), n_max, dtype=torch.bool)
    for b, v in enumerate(items):
        if v.tokens.shape[1] != c:
            raise InputError(
                f"Feature sizes differ ({v.tokens.shape[1]} vs {c}); use one backbone for all images."
            )
        n = v.tokens.shape[0]
        tokens[b, :n] = torch.from_numpy(v.tokens)
        positions[b, :n] = torch.from_numpy(v.positions)
        mask[b, :n] = True
    return tokens.to(device), mask.to(device), positions.to(device)
