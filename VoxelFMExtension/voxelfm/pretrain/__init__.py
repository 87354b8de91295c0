"""Self-supervised pretraining of the VoxelFM backbone (DINO + iBOT + KoLeo on 3D CT multi-crops)."""

from __future__ import annotations

from typing import Any

__all__ = ["PretrainConfig", "load_config", "run_pretraining"]


def __getattr__(name: str) -> Any:  # lazy: keep `import voxelfm.pretrain` cheap
    if name in ("PretrainConfig", "load_config"):
        from . import config

        return getattr(config, name)
    if name == "run_pretraining":
        from .trainer import run_pretraining

        return run_pretraining
    raise AttributeError(name)
