"""VoxelFM core: a Qt-free, Slicer-free package (torch, numpy, SimpleITK).

Public entry points are imported lazily so that ``import voxelfm`` stays cheap (the Slicer GUI imports it at
start-up) and so that sub-packages can be used without torch where they do not need it.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["load_backbone", "Volume", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "load_backbone":
        from .model.loading import load_backbone

        return load_backbone
    if name == "Volume":
        from .volume import Volume

        return Volume
    raise AttributeError(f"module 'voxelfm' has no attribute {name!r}")
