"""AdamW parameter groups: layer-wise lr decay, patch-embed lr multiplier, no weight decay on 1-D params/tokens.

Layer-wise decay lets early layers (generic local features) move slower than late ones; the patch embed
gets a further multiplier because it sees raw intensities and destabilises training when it moves fast.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
from torch import nn

from .config import OptimConfig

_NO_WD_TOKENS = ("cls_token", "register_tokens", "mask_token")


def layer_id(name: str, depth: int) -> int:
    """0: patch embed and tokens; i+1: block i; depth+1: final norm and anything else in the backbone."""
    if name.startswith(("patch_embed", *_NO_WD_TOKENS)) or name.startswith("rope_embed"):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1


def param_multipliers(
    name: str, p: nn.Parameter, depth: int, cfg: OptimConfig, in_backbone: bool
) -> tuple[float, float, bool]:
    """(lr multiplier, wd multiplier, is_last_layer) for one parameter."""
    lr_mult = cfg.layerwise_decay ** (depth + 1 - layer_id(name, depth)) if in_backbone else 1.0
    if in_backbone and name.startswith("patch_embed"):
        lr_mult *= cfg.patch_embed_lr_mult
    no_wd = (
        p.ndim <= 1 or name.endswith(".bias") or any(t in name for t in _NO_WD_TOKENS) or "original0" in name
    )
    return lr_mult, 0.0 if no_wd else 1.0, "last_layer" in name


def build_param_groups(
    backbone: nn.Module, heads: dict[str, nn.Module], depth: int, cfg: OptimConfig
) -> list[dict]:
    """Parameters grouped by identical (lr mult, wd mult, last-layer) so the optimiser stays small."""
    grouped: dict[tuple[float, float, bool], list[nn.Parameter]] = defaultdict(list)
    for name, p in backbone.named_parameters():
        if p.requires_grad:
            grouped[param_multipliers(name, p, depth, cfg, True)].append(p)
    for prefix, head in heads.items():
        for name, p in head.named_parameters():
            if p.requires_grad:
                grouped[param_multipliers(f"{prefix}.{name}", p, depth, cfg, False)].append(p)
    return [
        {
            "params": ps,
            "lr_multiplier": lr,
            "wd_multiplier": wd,
            "is_last_layer": last,
            "lr": 0.0,
            "weight_decay": 0.0,
        }
        for (lr, wd, last), ps in sorted(grouped.items(), key=lambda kv: kv[0])
    ]


def build_optimizer(groups: list[dict], cfg: OptimConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(groups, betas=(cfg.adamw_beta1, cfg.adamw_beta2))


def apply_schedule(opt: torch.optim.Optimizer, lr: float, wd: float, last_layer_lr_factor: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr * g["lr_multiplier"] * (last_layer_lr_factor if g["is_last_layer"] else 1.0)
        g["weight_decay"] = wd * g["wd_multiplier"]


def build_student_optimizer(meta: Any, cfg: Any) -> torch.optim.AdamW:
    """AdamW over the student's backbone and heads with the layer-wise lr decay groups (``cfg``: PretrainConfig)."""
    heads = {k: m for k, m in meta.student.named_children() if k != "backbone"}
    groups = build_param_groups(meta.student.backbone, heads, cfg.student.depth, cfg.optim)
    return build_optimizer(groups, cfg.optim)
