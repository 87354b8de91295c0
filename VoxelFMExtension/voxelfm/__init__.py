"""VoxelFM core: a Qt-free, Slicer-free package (torch, numpy, SimpleITK).

Public entry points are imported lazily so that ``import voxelfm`` stays cheap (the Slicer GUI imports it at
start-up) and so that sub-packages can be used without torch where they do not need it.
"""

from __future__ import annotations

from .lazy import lazy_getattr

__version__ = "0.1.0"

_WHERE = {
    "load_backbone": "voxelfm.model.loading",
    "Volume": "voxelfm.imaging.volume",
    "read_volume": "voxelfm.imaging.io",
    "write_volume": "voxelfm.imaging.io",
    "extract_features": "voxelfm.features.extract",
    "VolumeFeatures": "voxelfm.features.volume_features",
}

__all__ = ["__version__", *_WHERE]

__getattr__ = lazy_getattr(__name__, _WHERE)
