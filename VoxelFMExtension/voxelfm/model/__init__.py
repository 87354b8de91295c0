"""VoxelFM 3D ViT backbone (function-equal to the published model; SDPA attention).

Names are loaded lazily so that reading an architecture config (``model.config``) does not import torch.
"""

from __future__ import annotations

from ..lazy import lazy_exports

_EXPORTS = {".config": ("BackboneConfig",), ".vit": ("VoxelFMBackbone",)}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
