"""The VoxelFM 3D ViT: patch embed, [cls, registers, patches], pre-norm blocks with 3D RoPE, final norm.

State-dict keys follow the official checkpoint layout (after removing the ``backbone.`` prefix) so the
published weights load strictly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..errors import InputError
from .block import Block
from .config import BackboneConfig
from .patch_embed import PatchEmbed3D
from .rope import RopePositionEmbedding3D


class VoxelFMBackbone(nn.Module):
    def __init__(self, cfg: BackboneConfig, init: bool = True) -> None:
        """``init=False`` skips the random init (the caller loads weights; see checkpoint.build_and_load)."""
        super().__init__()
        self.cfg = cfg
        c = cfg.embed_dim
        self.patch_size = cfg.patch_size
        self.embed_dim = c
        self.num_register_tokens = cfg.num_register_tokens
        self.patch_embed = PatchEmbed3D(cfg.patch_size, c)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c))
        self.register_tokens = nn.Parameter(torch.zeros(1, cfg.num_register_tokens, c))
        self.mask_token = nn.Parameter(torch.zeros(1, c))
        self.rope_embed = RopePositionEmbedding3D(cfg.head_dim, cfg.rope_base)
        dpr = [cfg.drop_path_rate] * cfg.depth  # uniform stochastic depth, as in training
        self.blocks = nn.ModuleList(
            Block(
                c,
                cfg.num_heads,
                cfg.mlp_hidden_dim,
                cfg.layerscale,
                cfg.qkv_bias,
                cfg.proj_bias,
                cfg.ffn_bias,
                dpr[i],
                cfg.norm_eps,
            )
            for i in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(c, eps=cfg.norm_eps)
        if init:
            self.init_weights()

    def init_weights(self) -> None:
        """Random init for pretraining from scratch (truncated normal, small token inits)."""
        nn.init.normal_(self.cls_token, std=1e-6)
        nn.init.normal_(self.register_tokens, std=1e-6)
        nn.init.zeros_(self.mask_token)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.patch_embed.proj.weight
        nn.init.trunc_normal_(w.view(w.shape[0], -1), std=0.02)

    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:  # the reference's [B, D, H, W]
            x = x[:, None]
        if x.ndim != 5 or x.shape[1] != 1:
            raise InputError(f"Expected input [B,1,D,H,W] or [B,D,H,W], got shape {tuple(x.shape)}.")
        bad = [s for s in x.shape[2:] if s % self.patch_size or s == 0]
        if bad:
            raise InputError(
                f"Spatial size {tuple(x.shape[2:])} is not a positive multiple of the patch size "
                f"{self.patch_size}; crop with voxelfm.imaging.preprocess.prepare() first."
            )
        return x

    def forward_features(
        self,
        x: torch.Tensor,
        masks: torch.Tensor | None = None,
        on_block: Callable[[int, int], None] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Tokens after the final norm; ``on_block(i, depth)`` runs after each block (progress / cancel)."""
        x = self._check_input(x)
        tokens, (d, h, w) = self.patch_embed(x.to(self.patch_embed.proj.weight.dtype))
        b = tokens.shape[0]
        if masks is not None:
            tokens = torch.where(masks.reshape(b, -1, 1), self.mask_token.to(tokens.dtype)[None], tokens)
        prefix = torch.cat([self.cls_token.expand(b, -1, -1), self.register_tokens.expand(b, -1, -1)], dim=1)
        seq = torch.cat([prefix.to(tokens.dtype), tokens], dim=1)
        rope = self.rope_embed.tables(d, h, w)
        n_prefix = 1 + self.num_register_tokens
        for i, blk in enumerate(self.blocks):
            seq = blk(seq, rope, n_prefix)
            if on_block is not None:
                on_block(i + 1, len(self.blocks))
        normed = self.norm(seq)
        patch = normed[:, n_prefix:]
        return {
            "cls": normed[:, 0],
            "registers": normed[:, 1:n_prefix],
            "patch": patch.reshape(b, d, h, w, -1),
            "patch_tokens": patch,
            "prenorm": seq,
        }

    def forward(self, x: torch.Tensor, masks: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return self.forward_features(x, masks)
