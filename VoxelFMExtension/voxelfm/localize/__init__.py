"""Localisation: landmarks and boxes from one or a few examples (one-shot transfer, few-shot probe).

Names are loaded lazily so that reading a markups file does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "LandmarkTemplate": "template",
    "LocalisationPipeline": "pipeline",
    "LocalisationResult": "result",
    "PointList": "points",
    "Reference": "pipeline",
    "TransferConfig": "config",
    "read_point_list": "markups_json",
    "write_point_list": "markups_json",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'voxelfm.localize' has no attribute {name!r}")
