"""The Quick-start main job: features + few-shot tumour segmentation on the embedded sample chest CT.

Steps: fetch pyradiomics' lung1 CT (sha256-checked) -> default model (official VoxelFM when cached or
downloadable, else the bundled voxelfm-tiny) -> features (+ PCA picture) -> a probe fitted on fully labelled
axial slice(s) through the nodule -> the whole volume segmented -> Dice against the full reference label.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..features.service import FeatureService, ModelSpec, feature_service
from ..files.atomic import atomic_write_text
from ..imaging.volume import Volume
from ..progress import ProgressFn, no_progress
from ..segment.classes import SegmentClass
from ..segment.config import SegmentationConfig
from ..segment.labels import UNLABELLED
from ..segment.metrics import dice
from ..segment.pipeline import SegmentationPipeline

log = logging.getLogger(__name__)

TUMOUR = SegmentClass(1, "tumour", (0.9, 0.2, 0.2))


@dataclass
class DemoResult:
    summary: dict[str, Any]
    files: dict[str, Path]


def sparse_slice_labels(reference: np.ndarray, n_slices: int = 1) -> tuple[np.ndarray, list[int]]:
    """Fully labelled axial slices through the middle of the structure; every other voxel unlabelled."""
    fg_slices = np.flatnonzero(reference.reshape(reference.shape[0], -1).any(axis=1))
    if fg_slices.size == 0:
        raise InputError("The reference label is empty: nothing to label slices of.")
    centre = int(fg_slices[len(fg_slices) // 2])
    chosen = sorted(fg_slices, key=lambda k: (abs(int(k) - centre), int(k)))[:n_slices]
    sparse = np.full(reference.shape, UNLABELLED, dtype=np.uint8)
    for k in chosen:
        sparse[k] = (reference[k] > 0).astype(np.uint8)
    return sparse, sorted(int(k) for k in chosen)


def run_demo(
    out_dir: str | Path,
    spec: ModelSpec | None = None,
    n_slices: int = 1,
    progress: ProgressFn | None = None,
    service: FeatureService | None = None,
) -> DemoResult:
    from ..imaging.io import read_volume
    from ..imaging.pictures import feature_overview_png, label_overlay_png
    from ..segment.files import write_seg_nrrd, write_segmentation
    from .fetch import fetch_sample_data

    progress = progress or no_progress
    if n_slices < 1:
        raise InputError(f"--slices must be at least 1, got {n_slices}.")
    spec = spec or ModelSpec()
    service = service or feature_service()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    progress(0.0, "sample data")
    case = fetch_sample_data()
    volume = read_volume(case.image)
    reference = read_volume(case.label, check_hu=False)
    if reference.array.shape != volume.array.shape or not np.allclose(
        reference.ijk_to_ras, volume.ijk_to_ras, atol=1e-3
    ):
        raise InputError(
            f"{case.label} is not on the grid of {case.image}; delete the sample-data folder and fetch it again."
        )
    ref = (reference.array > 0).astype(np.uint8)
    timings: dict[str, float] = {"sample_data_s": time.perf_counter() - t0}

    t = time.perf_counter()
    _, reason = service.resolve(spec)
    pipeline = SegmentationPipeline(spec, SegmentationConfig(), service=service)
    feats = pipeline.context(volume, None, progress=lambda f, m: progress(0.05 + 0.6 * f / 0.8, m)).features
    timings["features_s"] = time.perf_counter() - t
    files = {"features": feats.save(out / "features.npz")}
    files["features_png"] = feature_overview_png(
        volume, feats.patch, feats.grid_to_ras, out / "features_pca.png"
    )

    sparse, slices = sparse_slice_labels(ref, n_slices)
    labels = Volume(sparse, volume.ijk_to_ras, name="sparse labels")
    progress(0.7, "fitting the segmentation probe")
    t = time.perf_counter()
    result = pipeline.fit(volume, labels, [TUMOUR])
    timings["fit_and_predict_s"] = time.perf_counter() - t
    pred = (result.labelmap == TUMOUR.value).astype(np.uint8)

    files["segmentation"] = write_segmentation(result, out / "tumour_seg.nii.gz")
    files["seg_nrrd"] = write_seg_nrrd(pred, volume.ijk_to_ras, out / "tumour_seg.seg.nrrd", [TUMOUR])
    files["overlay_png"] = label_overlay_png(volume, pred, out / "tumour_overlay.png", reference=ref)
    unseen = np.ones(ref.shape[0], dtype=bool)
    unseen[slices] = False
    voxel_ml = float(np.prod(volume.spacing)) / 1000.0
    summary = {
        "case": f"{case.name}: {case.description} ({case.source}, {case.licence})",
        "model": feats.model,
        "model_choice": reason,
        "feature_grid": list(feats.grid_shape),
        "feature_extraction": feats.extraction,
        "labelled_axial_slices": slices,
        "dice_all_slices": round(dice(pred, ref), 4),
        # None when the structure lies only on labelled slices (nothing left to find)
        "dice_unlabelled_slices": round(dice(pred[unseen], ref[unseen]), 4) if ref[unseen].any() else None,
        "predicted_ml": round(float(pred.sum()) * voxel_ml, 3),
        "reference_ml": round(float(ref.sum()) * voxel_ml, 3),
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
    }
    files["summary"] = atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    progress(1.0, "done")
    return DemoResult(summary, files)
