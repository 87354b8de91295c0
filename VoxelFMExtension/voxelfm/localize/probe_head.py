"""The reference's few-shot localisation head: positional attention + soft-argmax over patch tokens.

tokens [B, N, C] + Linear(3 -> C)(normalised grid coordinates) -> one self-attention layer (4 heads,
residual) -> MLP C -> 128 -> L scoring each token for each of L landmarks -> softmax over the N tokens ->
the weighted mean of the coordinates = one point per landmark. With L = 1 this is exactly the reference's head
(its MLP is 864 -> 128 -> 1); several landmarks share the attention layer and get one score column each.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class HeadSpec:
    dim: int
    landmarks: int
    heads: int = 4
    hidden: int = 128

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def attention_heads(dim: int, wanted: int = 4) -> int:
    """``wanted`` heads when they divide the width, else the largest number below that does."""
    return next(h for h in range(min(wanted, dim), 0, -1) if dim % h == 0)


class SoftArgmaxHead(nn.Module):
    def __init__(self, spec: HeadSpec) -> None:
        super().__init__()
        self.spec = spec
        self.pos = nn.Linear(3, spec.dim)
        self.attn = nn.MultiheadAttention(spec.dim, attention_heads(spec.dim, spec.heads), batch_first=True)
        self.score = nn.Sequential(
            nn.Linear(spec.dim, spec.hidden), nn.GELU(), nn.Linear(spec.hidden, spec.landmarks)
        )

    def weights(self, tokens: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """Softmax weights [B, L, N] of every token for every landmark."""
        x = tokens + self.pos(coords)
        x = x + self.attn(x, x, x, need_weights=False)[0]
        return torch.softmax(self.score(x).transpose(1, 2), dim=-1)

    def forward(self, tokens: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """tokens [B, N, C], coords [B, N, 3] in [-1, 1] -> points [B, L, 3] in the same units."""
        return self.weights(tokens, coords) @ coords


def grid_coordinates(shape_dhw: tuple[int, int, int]) -> torch.Tensor:
    """Normalised (i, j, k) coordinates in [-1, 1] of every cell of a [d, h, w] grid, row-major: [N, 3]."""
    axes = [torch.linspace(-1.0, 1.0, n) if n > 1 else torch.zeros(1) for n in shape_dhw]
    k, j, i = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([i, j, k], dim=-1).reshape(-1, 3)
