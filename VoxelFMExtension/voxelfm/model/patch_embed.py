"""Non-overlapping 3D patch embedding (conv with kernel = stride = patch size, one input channel)."""

from __future__ import annotations

import torch
from torch import nn


class PatchEmbed3D(nn.Module):
    def __init__(self, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv3d(1, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """x [B,1,D,H,W] -> tokens [B, d*h*w, C] in row-major (d, h, w) order, and the grid (d, h, w)."""
        y = self.proj(x)
        grid = tuple(int(s) for s in y.shape[2:])
        return y.flatten(2).transpose(1, 2), grid  # type: ignore[return-value]
