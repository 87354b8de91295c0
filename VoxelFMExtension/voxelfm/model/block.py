"""Pre-norm transformer block: x += ls1(attn(norm1(x))); x += ls2(mlp(norm2(x)))."""

from __future__ import annotations

import torch
from torch import nn

from .attention import Attention
from .layers import DropPath, LayerScale, Mlp


class Block(nn.Module):
    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_hidden: int,
        layerscale: float | None,
        qkv_bias: bool,
        proj_bias: bool,
        ffn_bias: bool,
        drop_path: float,
        norm_eps: float,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, proj_bias=proj_bias)
        self.ls1 = LayerScale(dim, layerscale) if layerscale else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, mlp_hidden, bias=ffn_bias)
        self.ls2 = LayerScale(dim, layerscale) if layerscale else nn.Identity()
        self.drop_path = DropPath(drop_path)

    def forward(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None, n_prefix: int
    ) -> torch.Tensor:
        x = x + self.drop_path(self.ls1(self.attn(self.norm1(x), rope, n_prefix)))
        x = x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))
        return x
