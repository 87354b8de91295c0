"""Qt-free Slicer logic of the VoxelFM extension: MRML nodes <-> the ``voxelfm`` core.

Imports MRML classes from ``slicer`` and ``vtk`` only (never qt, ctk, ScriptedLoadableModule,
parameterNodeWrapper or slicer.modules), so the same code runs inside Slicer and in plain-Python tests
built on the slicer-core wheel. Functions take nodes and use ``node.GetScene()`` rather than the global
``slicer.mrmlScene`` where they can. The public logics are loaded lazily (``from VoxelFMLib import
FewShotSegmentLogic``) so that importing a small helper here does not import torch.
"""

from __future__ import annotations

from voxelfm.lazy import lazy_exports

_EXPORTS = {
    ".segment_logic": ("FewShotSegmentLogic", "FewShotResult"),
    ".features_logic": ("FeaturesLogic",),
    ".report_logic": ("ReportLogic",),
    ".localize_logic": ("LocalisationLogic",),
    ".retrieval_logic": ("RetrievalLogic",),
    ".model_service": ("ModelSpec", "feature_service"),
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
