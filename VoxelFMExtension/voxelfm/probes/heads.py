"""Probe heads: linear, MLP (on a pooled vector) and attentive pooling (on patch tokens).

Every head standardises its input with per-channel mean/std buffers fitted on the training cases, so
the saved probe is self-contained. ``head_spec`` (a JSON-able dict) rebuilds the same module.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


class _Standardize(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class LinearHead(nn.Module):
    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.norm = _Standardize(in_dim)
        self.fc = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.fc(self.norm(x))


class MLPHead(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.norm = _Standardize(in_dim)
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden_dim, out_dim)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(self.norm(x))


class AttentiveHead(nn.Module):
    """Learned queries cross-attend to the tokens; the attended summary feeds a linear layer.

    Lets the probe focus on the few tokens carrying a finding (a small lesion) that mean pooling dilutes.
    ``mask`` [B, T] marks valid tokens (volumes have different token counts).
    """

    def __init__(
        self, in_dim: int, out_dim: int, num_heads: int = 4, num_queries: int = 1, dropout: float = 0.0
    ):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = max(8, int(math.ceil(in_dim / num_heads)))
        inner = self.num_heads * self.head_dim
        self.norm = _Standardize(in_dim)
        self.query = nn.Parameter(torch.randn(num_queries, num_heads, self.head_dim) * 0.02)
        self.key = nn.Linear(in_dim, inner)
        self.value = nn.Linear(in_dim, inner)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(num_queries * inner, out_dim)

    def attention(
        self, x: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(summary [B, Q*H*dh], attention weights [B, Q, H, T])."""
        b, t, _ = x.shape
        x = self.norm(x)
        k = self.key(x).view(b, t, self.num_heads, self.head_dim)
        v = self.value(x).view(b, t, self.num_heads, self.head_dim)
        logits = torch.einsum("qhd,bthd->bqht", self.query, k) / math.sqrt(self.head_dim)
        if mask is not None:
            logits = logits.masked_fill(~mask[:, None, None, :], float("-inf"))
        weights = torch.softmax(logits, dim=-1)
        summary = torch.einsum("bqht,bthd->bqhd", weights, v).reshape(b, -1)
        return summary, weights

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        summary, _ = self.attention(x, mask)
        return self.fc(self.drop(summary))


HEADS: dict[str, type[nn.Module]] = {"linear": LinearHead, "mlp": MLPHead, "attentive": AttentiveHead}
HEAD_TYPES = tuple(HEADS)


def build_head(spec: dict[str, Any]) -> nn.Module:
    """Module from a spec: {"type", "in_dim", "out_dim", plus the head's own options}; an option the spec
    leaves out takes the head's default (one place for defaults: the head's constructor)."""
    kind = spec["type"]
    if kind not in HEADS:
        raise ValueError(f"Unknown head type {kind!r}; choose one of {', '.join(HEAD_TYPES)}.")
    return HEADS[kind](**{k: v for k, v in spec.items() if k != "type"})


def set_standardization(head: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
    """Store training-set channel statistics in the head (std floored so constant channels stay finite)."""
    head.norm.mean.copy_(mean.to(head.norm.mean.dtype))
    head.norm.std.copy_(std.clamp(min=1e-6).to(head.norm.std.dtype))
