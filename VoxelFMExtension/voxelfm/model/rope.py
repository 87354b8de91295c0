"""Axial 3D rotary position embedding (RoPE) on a patch grid.

Each head's channels are three consecutive blocks (z, y, x) of head_dim/3 channels, each holding
head_dim/6 rotation pairs of *adjacent* channels (2j, 2j+1). Coordinates are normalised per axis to
(-1, 1) by that axis' patch count, so RoPE encodes relative position within the volume extent.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class RopePositionEmbedding3D(nn.Module):
    def __init__(self, head_dim: int, base: float = 100.0) -> None:
        super().__init__()
        if head_dim % 6:
            raise ValueError(f"head_dim {head_dim} must be divisible by 6 for 3D RoPE")
        n_pairs = head_dim // 6
        # device="cpu" explicitly: also when built under `with torch.device("meta")` (checkpoint loading), where
        # an arange would import torch._refs (seconds).
        exponents = 2 * torch.arange(n_pairs, dtype=torch.float32, device="cpu") / (head_dim // 3)
        # Persistent: part of the official checkpoint, loaded strictly.
        self.register_buffer("periods", base**exponents, persistent=True)

    @property
    def n_pairs(self) -> int:
        return int(self.periods.shape[0])

    def grid_coords(self, d: int, h: int, w: int, device: torch.device | None = None) -> torch.Tensor:
        """[N, 3] (z, y, x) cell-centre coordinates in (-1, 1), row-major (d, h, w) token order."""
        axes = [
            (torch.arange(n, device=device, dtype=torch.float32) + 0.5) * 2.0 / n - 1.0 for n in (d, h, w)
        ]
        zz, yy, xx = torch.meshgrid(*axes, indexing="ij")
        return torch.stack([zz, yy, xx], dim=-1).reshape(-1, 3)

    def sin_cos(self, d: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        """sin/cos tables [N, 3, head_dim/6] in float32."""
        coords = self.grid_coords(d, h, w, device=self.periods.device)
        angles = 2 * math.pi * coords[:, :, None] / self.periods.float()[None, None, :]
        angles = torch.remainder(angles, 2 * math.pi)
        return torch.sin(angles), torch.cos(angles)

    def tables(self, d: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(signed sin, cos) [N, head_dim] float32, one value per channel, for ``apply_rope_tables``."""
        sin, cos = self.sin_cos(d, h, w)
        n = sin.shape[0]
        signed = torch.stack((-sin, sin), dim=-1).reshape(n, -1)  # pair (2j, 2j+1): (-sin, +sin)
        return signed.contiguous(), torch.stack((cos, cos), dim=-1).reshape(n, -1).contiguous()


def apply_rope(x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved channel pairs of x [B, heads, N, head_dim] by tables [N, 3, head_dim/6]."""
    b, nh, n, hd = x.shape
    pairs = x.float().reshape(b, nh, n, 3, hd // 6, 2)
    a, c = pairs[..., 0], pairs[..., 1]
    out = torch.stack((a * cos - c * sin, a * sin + c * cos), dim=-1)
    return out.reshape(b, nh, n, hd).to(x.dtype)


def apply_rope_tables(x: torch.Tensor, signed_sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    """``apply_rope`` with per-channel tables from ``RopePositionEmbedding3D.tables`` (bit-identical, fewer passes):
    out = x * cos + swap(x) * signed_sin, where swap exchanges the two channels of each pair."""
    xf = x.float()
    swapped = xf.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)
    out = xf * cos
    out += swapped * signed_sin  # not addcmul: a fused multiply-add would round differently
    return out.to(x.dtype)
