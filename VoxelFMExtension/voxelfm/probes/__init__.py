"""Probes on frozen VoxelFM features: classification, regression, survival (fit, evaluate, save, apply).

Imports are lazy so ``import voxelfm.probes`` does not pull in torch until a probe is used.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ProbeConfig", "FitResult", "Probe", "fit_probe", "fit_probe_inputs", "save_probe", "load_probe"]

_WHERE = {
    "ProbeConfig": "config",
    "FitResult": "fit",
    "fit_probe": "fit",
    "fit_probe_inputs": "fit",
    "Probe": "probe",
    "save_probe": "probe_file",
    "load_probe": "probe_file",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'voxelfm.probes' has no attribute {name!r}")
