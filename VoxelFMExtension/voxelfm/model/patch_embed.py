"""Non-overlapping 3D patch embedding (conv with kernel = stride = patch size, one input channel).

The weights are a Conv3d (the official checkpoint layout); the forward is the same linear map computed as a
reshape + one matmul, about 2x faster than the conv kernel on CPU (equal to it within float rounding).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PatchEmbed3D(nn.Module):
    def __init__(self, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv3d(1, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """x [B,1,D,H,W] -> tokens [B, d*h*w, C] in row-major (d, h, w) order, and the grid (d, h, w)."""
        b, _, depth, height, width = x.shape
        p = self.patch_size
        d, h, w = depth // p, height // p, width // p
        patches = x.reshape(b, d, p, h, p, w, p).permute(0, 1, 3, 5, 2, 4, 6).reshape(b, d * h * w, p**3)
        weight = self.proj.weight.reshape(self.proj.out_channels, p**3)
        return F.linear(patches, weight, self.proj.bias), (d, h, w)
