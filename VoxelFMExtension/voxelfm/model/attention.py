"""Multi-head self-attention with 3D RoPE on patch tokens, computed by torch SDPA.

SDPA (flash / memory-efficient kernels) keeps attention memory O(N) instead of materialising the
N x N logits, which is what makes 8-25k-token CT volumes fit on a workstation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .rope import apply_rope_tables


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, proj_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        # Output channels ordered [q | k | v], each [head 0 | head 1 | ...] (official layout).
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)

    def forward(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None, n_prefix: int
    ) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # [B, heads, N, head_dim]
        if rope is not None:  # (signed sin, cos) [N_patches, head_dim] from RopePositionEmbedding3D.tables
            sin, cos = rope
            q = torch.cat([q[:, :, :n_prefix], apply_rope_tables(q[:, :, n_prefix:], sin, cos)], dim=2)
            k = torch.cat([k[:, :, :n_prefix], apply_rope_tables(k[:, :, n_prefix:], sin, cos)], dim=2)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))
