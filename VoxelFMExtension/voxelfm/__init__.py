"""VoxelFM core: a Qt-free, Slicer-free package (torch, numpy, SimpleITK).

Public entry points are imported lazily so that ``import voxelfm`` stays cheap (the Slicer GUI imports it at
start-up) and so that sub-packages can be used without torch where they do not need it.
"""

from __future__ import annotations

from .lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "voxelfm.model.loading": ("load_backbone",),
    "voxelfm.imaging.volume": ("Volume",),
    "voxelfm.imaging.io": ("read_volume", "write_volume"),
    "voxelfm.features.extract": ("extract_features",),
    "voxelfm.features.volume_features": ("VolumeFeatures",),
}

__getattr__, _names = lazy_exports(__name__, _EXPORTS)
__all__ = ["__version__", *_names]
