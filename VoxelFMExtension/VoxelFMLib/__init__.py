"""Qt-free Slicer logic of the VoxelFM extension: MRML nodes <-> the ``voxelfm`` core.

Imports MRML classes from ``slicer`` and ``vtk`` only (never qt, ctk, ScriptedLoadableModule,
parameterNodeWrapper or slicer.modules), so the same code runs inside Slicer and in plain-Python tests
built on the slicer-core wheel. Functions take nodes and use ``node.GetScene()`` rather than the global
``slicer.mrmlScene`` where they can. The public logics are loaded lazily (``from VoxelFMLib import
FewShotSegmentLogic``) so that importing a small helper here does not import torch.
"""

from __future__ import annotations

from voxelfm.lazy import lazy_getattr

_WHERE = {
    "FewShotSegmentLogic": ".segment_logic",
    "FewShotResult": ".segment_logic",
    "FeaturesLogic": ".features_logic",
    "ReportLogic": ".report_logic",
    "LocalisationLogic": ".localize_logic",
    "RetrievalLogic": ".retrieval_logic",
    "ModelSpec": ".model_service",
    "feature_service": ".model_service",
}

__all__ = sorted(_WHERE)

__getattr__ = lazy_getattr(__name__, _WHERE)
