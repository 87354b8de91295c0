"""Perceiver resampler: a fixed number of learned queries read a volume's patch tokens in one cross-attention.

WHY: a CT gives thousands of patch tokens, a different number per volume; the LM gets a fixed, small set of
visual tokens. Patch tokens of the RoPE backbone carry no absolute position, so Fourier features of each
patch's normalised grid position are added to the keys (laterality, lobe).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import HeadConfig


def fourier_positions(positions: torch.Tensor, frequencies: int) -> torch.Tensor:
    """[B, N, 3] in [0, 1] -> [B, N, 6 * frequencies] (sin, cos of 2^f * pi * x)."""
    scales = (2.0 ** torch.arange(frequencies, device=positions.device, dtype=positions.dtype)) * math.pi
    angles = positions[..., None] * scales  # [B, N, 3, F]
    return torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(-2)


class PerceiverResampler(nn.Module):
    def __init__(self, in_dim: int, config: HeadConfig) -> None:
        super().__init__()
        d = config.latent_dim
        self.frequencies = config.position_frequencies
        self.queries = nn.Parameter(torch.randn(config.num_queries, d) * 0.02)
        self.in_proj = nn.Linear(in_dim, d)
        self.pos_proj = nn.Linear(6 * self.frequencies, d) if self.frequencies else None
        self.norm_kv = nn.LayerNorm(d)
        self.norm_q = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, config.num_heads, batch_first=True)
        self.ff = nn.Sequential(
            nn.LayerNorm(d), nn.Linear(d, config.ff_mult * d), nn.GELU(), nn.Linear(config.ff_mult * d, d)
        )
        self.norm_out = nn.LayerNorm(d)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """tokens [B, N, C], mask [B, N] (True = real token), positions [B, N, 3] -> [B, queries, latent]."""
        kv = self.in_proj(tokens)
        if self.pos_proj is not None:
            kv = kv + self.pos_proj(fourier_positions(positions, self.frequencies))
        kv = self.norm_kv(kv)
        q = self.norm_q(self.queries).unsqueeze(0).expand(tokens.shape[0], -1, -1)
        attended, _ = self.attn(q, kv, kv, key_padding_mask=~mask, need_weights=False)
        x = q + attended
        return self.norm_out(x + self.ff(x))


class ReportHead(nn.Module):
    """Resampler + MLP projector: patch tokens -> ``num_queries`` embeddings in the LM's input space."""

    def __init__(self, in_dim: int, lm_hidden: int, config: HeadConfig) -> None:
        super().__init__()
        hidden = config.projector_hidden or lm_hidden
        self.resampler = PerceiverResampler(in_dim, config)
        self.projector = nn.Sequential(
            nn.Linear(config.latent_dim, hidden), nn.GELU(), nn.Linear(hidden, lm_hidden)
        )

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.projector(self.resampler(tokens, mask, positions))
