"""Few-shot segmentation on frozen VoxelFM features (probe fitting, prediction, probe files, baseline)."""

from .api import (
    SegmentationConfig,
    SegmentationContext,
    SegmentationProbe,
    SegmentationResult,
    fit_segmentation,
)
from .labels import UNLABELLED, painted_slices_to_labels
from .postprocess import PostprocessConfig
from .probe_file import load_segmentation_probe, save_segmentation_probe

__all__ = [
    "UNLABELLED",
    "PostprocessConfig",
    "SegmentationConfig",
    "SegmentationContext",
    "SegmentationProbe",
    "SegmentationResult",
    "fit_segmentation",
    "load_segmentation_probe",
    "painted_slices_to_labels",
    "save_segmentation_probe",
]
