"""Self-supervised pretraining of the VoxelFM backbone (DINO + iBOT + KoLeo on 3D CT multi-crops)."""

from __future__ import annotations

from ..lazy import lazy_exports

_EXPORTS = {
    ".config": ("PretrainConfig", "load_config"),
    ".trainer": ("run_pretraining",),
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)  # keep `import voxelfm.pretrain` cheap
