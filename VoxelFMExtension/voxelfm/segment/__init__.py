"""Few-shot segmentation on frozen VoxelFM features: labels, probe fitting, prediction, probe files, pipeline.

Design (measured in Testing/Benchmarks/bench_fewshot_segmentation.py and bench_segment_refit.py):
- a class-balanced linear softmax probe on patch features (PCA-whitened to 128 dims when wider) plus additive
  piecewise-linear functions of local intensity (HU, mean and std at 3 mm, mean at 8 mm): intensity gives the
  sharp boundaries a 14-voxel patch grid cannot, the patch features give the "which structure" context;
- prediction interpolates logits (not features) from the patch grid to the voxel grid, then adds one table
  lookup per class, so a refit with cached features is well under a second on one core;
- with fully labelled slices the labelled class frequencies are used as a half-strength prior
  (prior_strength 0.5), which removes most false positives of small structures; scribbles get no prior;
- labels are mapped to the image through RAS, so label grids may be flipped, shifted or differently sampled.

``SegmentationPipeline`` (pipeline.py) is the entry point the CLI and the Slicer logic share.
"""

from .classes import SegmentClass
from .config import SegmentationConfig
from .context import SegmentationContext
from .fit import fit_segmentation
from .labels import UNLABELLED, FewShotLabels, few_shot_labels, painted_slices_to_labels
from .pipeline import SegmentationPipeline
from .postprocess import PostprocessConfig
from .probe import SegmentationProbe
from .probe_file import load_segmentation_probe, save_segmentation_probe
from .result import ClassStats, SegmentationResult

__all__ = [
    "UNLABELLED",
    "ClassStats",
    "FewShotLabels",
    "PostprocessConfig",
    "SegmentClass",
    "SegmentationConfig",
    "SegmentationContext",
    "SegmentationPipeline",
    "SegmentationProbe",
    "SegmentationResult",
    "few_shot_labels",
    "fit_segmentation",
    "load_segmentation_probe",
    "painted_slices_to_labels",
    "save_segmentation_probe",
]
