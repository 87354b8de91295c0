"""Probes on frozen VoxelFM features: classification, regression, survival (fit, evaluate, save, apply).

Imports are lazy so ``import voxelfm.probes`` does not pull in torch until a probe is used.
"""

from __future__ import annotations

from ..lazy import lazy_exports

_EXPORTS = {
    ".config": ("ProbeConfig",),
    ".fit": ("FitResult", "fit_probe", "fit_probe_inputs"),
    ".probe": ("Probe",),
    ".probe_file": ("save_probe", "load_probe"),
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
