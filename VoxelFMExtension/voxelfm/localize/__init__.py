"""Localisation: landmarks and boxes from one or a few examples (one-shot transfer, few-shot probe).

Names are loaded lazily so that reading a markups file does not import torch.
"""

from __future__ import annotations

from ..lazy import lazy_exports

_EXPORTS = {
    ".template": ("LandmarkTemplate",),
    ".pipeline": ("LocalisationPipeline", "Reference"),
    ".result": ("LocalisationResult",),
    ".points": ("PointList",),
    ".config": ("TransferConfig",),
    ".markups_json": ("read_point_list", "write_point_list"),
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
