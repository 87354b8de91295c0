"""VoxelFM 3D ViT backbone (function-equal to the published model; SDPA attention)."""

from .config import BackboneConfig
from .vit import VoxelFMBackbone

__all__ = ["BackboneConfig", "VoxelFMBackbone"]
