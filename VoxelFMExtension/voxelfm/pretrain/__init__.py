"""Self-supervised pretraining of the VoxelFM backbone (DINO + iBOT + KoLeo on 3D CT multi-crops)."""

from __future__ import annotations

from ..lazy import lazy_getattr

__all__ = ["PretrainConfig", "load_config", "run_pretraining"]

_WHERE = {"PretrainConfig": ".config", "load_config": ".config", "run_pretraining": ".trainer"}

__getattr__ = lazy_getattr(__name__, _WHERE)  # keep `import voxelfm.pretrain` cheap
