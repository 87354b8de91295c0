"""Probes on frozen VoxelFM features: classification, regression, survival (fit, evaluate, save, apply).

Imports are lazy so ``import voxelfm.probes`` does not pull in torch until a probe is used.
"""

from __future__ import annotations

from ..lazy import lazy_getattr

__all__ = ["ProbeConfig", "FitResult", "Probe", "fit_probe", "fit_probe_inputs", "save_probe", "load_probe"]

_WHERE = {
    "ProbeConfig": ".config",
    "FitResult": ".fit",
    "fit_probe": ".fit",
    "fit_probe_inputs": ".fit",
    "Probe": ".probe",
    "save_probe": ".probe_file",
    "load_probe": ".probe_file",
}

__getattr__ = lazy_getattr(__name__, _WHERE)
