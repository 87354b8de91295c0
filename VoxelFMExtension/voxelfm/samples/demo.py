"""The Quick-start main job, a tour of every capability on the embedded sample chest CTs.

Steps: fetch pyradiomics' lung1 and lung2 CTs (sha256-checked) -> default model (official VoxelFM when cached or
downloadable, else the bundled voxelfm-tiny) -> 1. features (+ PCA picture) -> 2. a segmentation probe fitted on
labelled axial slice(s) through the nodule, the whole volume segmented, Dice against the full reference label
-> 3. landmarks transferred from lung1 to a moved and cropped copy of it (truth known: errors in mm) -> 4. a
3-case library (lung2, the moved copy, a moved copy of lung2) queried with lung1, whole volume and nodule
region -> 5. a report draft for lung1 from its tumour segmentation and its most similar other cases -> one page,
``index.html``, with every picture and what each result means.

Every step calls the capability's public pipeline (the same code as the commands and the Slicer modules).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..features.service import FeatureService, ModelSpec, feature_service
from ..files.atomic import atomic_write_text
from ..imaging.io import read_volume, write_volume
from ..imaging.pictures import feature_overview_png
from ..imaging.volume import Volume
from ..localize.markups_json import write_point_list
from ..localize.pipeline import LocalisationPipeline, Reference
from ..localize.points import PointList
from ..progress import ProgressFn, no_progress
from ..report.library_source import LibraryNeighbours
from ..report.pipeline import ReportPipeline
from ..report.segmentation_files import read_segmentation
from ..retrieval.pipeline import RetrievalPipeline
from ..retrieval.regions import BoxRegion
from ..segment.classes import SegmentClass
from ..segment.config import SegmentationConfig
from ..segment.files import write_seg_nrrd, write_segmentation
from ..segment.labels import UNLABELLED
from ..segment.metrics import dice
from ..segment.pipeline import SegmentationPipeline
from . import demo_cases as cases
from . import demo_figures as figures
from .demo_page import write_page
from .fetch import fetch_sample_data

log = logging.getLogger(__name__)

TUMOUR = SegmentClass(1, "tumour", (0.9, 0.2, 0.2))
LIBRARY = "case_library"
CASES = "cases"
REGION_MM = 30.0  # edge of the box around the nodule for the region query


@dataclass
class DemoResult:
    summary: dict[str, Any]
    files: dict[str, Path]


@dataclass
class _Tour:
    """What the steps share: inputs, the output folder, the model, and what was found so far."""

    out: Path
    spec: ModelSpec
    service: FeatureService
    volume: Volume  # lung1
    label: Volume  # lung1's nodule label
    other: Volume  # lung2
    other_label: Volume
    summary: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


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


def _read_case(name: str) -> tuple[Volume, Volume, Any]:
    case = fetch_sample_data(case=name)
    volume = read_volume(case.image)
    label = read_volume(case.label, check_hu=False)
    if label.array.shape != volume.array.shape or not np.allclose(
        label.ijk_to_ras, volume.ijk_to_ras, atol=1e-3
    ):
        raise InputError(
            f"{case.label} is not on the grid of {case.image}; delete the sample-data folder and fetch it again."
        )
    return volume, Volume((label.array > 0).astype(np.uint8), label.ijk_to_ras, name=f"{name} label"), case


def run_demo(
    out_dir: str | Path,
    spec: ModelSpec | None = None,
    n_slices: int = 1,
    progress: ProgressFn | None = None,
    service: FeatureService | None = None,
) -> DemoResult:
    """The tour; returns the summary (also in summary.json) and every file written (the page: ``files["page"]``)."""
    progress = progress or no_progress
    if n_slices < 1:
        raise InputError(f"--slices must be at least 1, got {n_slices}.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    progress(0.0, "sample data")
    volume, label, case = _read_case("lung1")
    other, other_label, _ = _read_case("lung2")
    tour = _Tour(out, spec or ModelSpec(), service or feature_service(), volume, label, other, other_label)
    tour.timings["sample_data_s"] = time.perf_counter() - t
    tour.summary["case"] = f"{case.name}: {case.description} ({case.source}, {case.licence})"
    steps = [
        ("features_and_segmentation_s", _segmentation, 0.05, "features and few-shot segmentation"),
        ("landmarks_s", _landmarks, 0.45, "landmark transfer"),
        ("retrieval_s", _retrieval, 0.6, "case library and queries"),
        ("report_s", _report, 0.85, "report draft"),
    ]
    for n, (key, step, start, message) in enumerate(steps):
        end = steps[n + 1][2] if n + 1 < len(steps) else 0.95
        progress(start, message)
        t = time.perf_counter()
        step(tour, n_slices, lambda f, m, a=start, b=end: progress(a + (b - a) * f, m))
        tour.timings[key] = time.perf_counter() - t
    tour.summary["timings_s"] = {k: round(v, 2) for k, v in tour.timings.items()}
    tour.files["summary"] = atomic_write_text(out / "summary.json", json.dumps(tour.summary, indent=2))
    tour.files["page"] = write_page(out, tour.summary, tour.files)
    progress(1.0, "done")
    return DemoResult(tour.summary, tour.files)


def _segmentation(tour: _Tour, n_slices: int, progress: ProgressFn) -> None:
    out, volume = tour.out, tour.volume
    ref = tour.label.array
    _, reason = tour.service.resolve(tour.spec)
    pipeline = SegmentationPipeline(tour.spec, SegmentationConfig(), service=tour.service)
    feats = pipeline.context(volume, None, progress=lambda f, m: progress(0.5 * f, m)).features
    files = tour.files
    files["features"] = feats.save(out / "features.npz")
    files["features_pca_raw"] = feature_overview_png(
        volume, feats.patch, feats.grid_to_ras, out / "features_pca.png"
    )
    model_id = str(feats.model.get("id"))
    files["features_png"] = figures.features_figure(
        files["features_pca_raw"], model_id, feats.grid_shape, out / "1_features_pca.png"
    )

    sparse, slices = sparse_slice_labels(ref, n_slices)
    progress(0.6, "fitting the segmentation probe")
    result = pipeline.fit(volume, Volume(sparse, volume.ijk_to_ras, name="sparse labels"), [TUMOUR])
    pred = (result.labelmap == TUMOUR.value).astype(np.uint8)
    files["segmentation"] = write_segmentation(result, out / "tumour_seg.nii.gz")
    files["seg_nrrd"] = write_seg_nrrd(pred, volume.ijk_to_ras, out / "tumour_seg.seg.nrrd", [TUMOUR])
    unseen = np.ones(ref.shape[0], dtype=bool)
    unseen[slices] = False
    # None when the structure lies only on labelled slices (nothing left to find)
    dice_unseen = round(dice(pred[unseen], ref[unseen]), 4) if ref[unseen].any() else None
    dice_all = round(dice(pred, ref), 4)
    files["overlay_png"] = figures.segmentation_figure(
        volume, pred, ref, slices, dice_all, dice_unseen, out / "2_tumour_segmentation.png"
    )
    voxel_ml = float(np.prod(volume.spacing)) / 1000.0
    tour.summary.update(
        {
            "model": feats.model,
            "model_choice": reason,
            "feature_grid": list(feats.grid_shape),
            "feature_extraction": feats.extraction,
            "labelled_axial_slices": slices,
            "dice_all_slices": dice_all,
            "dice_unlabelled_slices": dice_unseen,
            "predicted_ml": round(float(pred.sum()) * voxel_ml, 3),
            "reference_ml": round(float(ref.sum()) * voxel_ml, 3),
        }
    )


def _landmarks(tour: _Tour, n_slices: int, progress: ProgressFn) -> None:
    out = tour.out
    moved, motion = cases.moved_copy(tour.volume, cases.Motion(), "lung1_moved")
    (out / CASES).mkdir(exist_ok=True)
    tour.files["moved_copy"] = write_volume(moved, out / CASES / "lung1_moved.nrrd")
    names, points = cases.pick_landmarks(tour.volume, tour.label)
    given = PointList(names, points, name="lung1 landmarks")
    truth = cases.apply_motion(motion, points)
    result = LocalisationPipeline(tour.spec, service=tour.service).transfer(
        moved, [Reference(tour.volume, given)], progress=progress
    )
    found = np.array([result.points.position(n) for n in names])
    errors = np.linalg.norm(found - truth, axis=1)
    tour.files["landmarks_given"] = write_point_list(given, out / "landmarks_lung1.mrk.json")
    tour.files["landmarks_found"] = write_point_list(result.points, out / "landmarks_found_in_copy.mrk.json")
    tour.files["landmarks_truth"] = write_point_list(
        PointList(names, truth, name="true places in the copy"), out / "landmarks_truth_in_copy.mrk.json"
    )
    tour.files["landmarks_png"] = figures.landmarks_figure(
        tour.volume, moved, names, points, truth, found, out / "3_landmarks.png"
    )
    motion_spec = cases.Motion()
    tour.summary["landmarks"] = {
        "copy": (
            f"lung1 cropped to {list(moved.array.shape[::-1])} voxels (i, j, k), rotated {motion_spec.rotation_deg:g} "
            f"degrees about the superior axis and shifted {list(motion_spec.shift_mm)} mm"
        ),
        "points": [
            {"name": n, "error_mm": round(float(e), 2), "confidence": round(float(c), 3)}
            for n, e, c in zip(names, errors, result.confidence, strict=True)
        ],
        "median_error_mm": round(float(np.median(errors)), 2),
        "max_error_mm": round(float(errors.max()), 2),
    }


def _retrieval(tour: _Tour, n_slices: int, progress: ProgressFn) -> None:
    out = tour.out
    library = out / LIBRARY
    if library.exists():  # the demo's own library from an earlier run in this (claimed) demo folder
        shutil.rmtree(library)
    motion = cases.Motion(
        rotation_deg=-6.0, shift_mm=(-10.0, 6.0, -12.0), crop_low=(0.04, 0.06, 0.1), keep=(0.9, 0.88, 0.82)
    )
    other_moved, _ = cases.moved_copy(tour.other, motion, "lung2_moved")
    lung1_moved_path = out / CASES / "lung1_moved.nrrd"
    paths = {
        "lung2": write_volume(tour.other, out / CASES / "lung2.nrrd"),
        "lung1_moved": lung1_moved_path,
        "lung2_moved": write_volume(other_moved, out / CASES / "lung2_moved.nrrd"),
    }

    lung1_moved = read_volume(lung1_moved_path)
    volumes = {"lung2": tour.other, "lung1_moved": lung1_moved, "lung2_moved": other_moved}
    reports = {
        "lung2": cases.nodule_report(tour.other_label),
        "lung1_moved": cases.nodule_report(tour.label),
        "lung2_moved": cases.nodule_report(tour.other_label),
    }
    pipeline = RetrievalPipeline(tour.spec, service=tour.service)
    for n, (case_id, vol) in enumerate(volumes.items()):
        progress(0.8 * n / len(volumes), f"adding {case_id} to the library")
        pipeline.add_volume(library, vol, case_id, report=reports[case_id], path=str(paths[case_id]))
    progress(0.85, "queries")
    whole = pipeline.query(library, tour.volume, k=3)
    nodule = cases.label_centre(tour.label)
    box = BoxRegion.centred(nodule, (REGION_MM, REGION_MM, REGION_MM))
    region = pipeline.query(library, tour.volume, k=3, region=box)
    true_place = cases.apply_motion(cases.Motion().matrix(tour.volume), nodule)
    top = region.hits[0]
    region_error = float(np.linalg.norm(top.ras - true_place)) if top.ras is not None else None
    rows = [
        (
            "query: lung1, whole volume",
            cases.volume_centre(tour.volume),
            None,
            [
                (h.case_id, volumes[h.case_id], cases.volume_centre(volumes[h.case_id]), h.score)
                for h in whole.hits
            ],
        ),
        (
            f"query: lung1, {REGION_MM:g} mm box\naround the nodule",
            nodule,
            REGION_MM / 2,
            [(h.case_id, volumes[h.case_id], h.ras, h.score) for h in region.hits if h.ras is not None],
        ),
    ]
    tour.files["retrieval_png"] = figures.retrieval_figure(tour.volume, rows, out / "4_similar_cases.png")
    tour.summary["retrieval"] = {
        "library": [{"case_id": c, "report": reports[c]} for c in volumes],
        "whole_volume": [{"case_id": h.case_id, "score": round(h.score, 3)} for h in whole.hits],
        "nodule_region": [
            {"case_id": h.case_id, "score": round(h.score, 3), "ras": [round(float(v), 1) for v in h.ras]}
            for h in region.hits
            if h.ras is not None
        ],
        "nodule_region_top_hit_error_mm": None if region_error is None else round(region_error, 1),
        "nodule_region_top_hit_is_same_patient": top.case_id == "lung1_moved",
    }


def _report(tour: _Tour, n_slices: int, progress: ProgressFn) -> None:
    out = tour.out
    # lung1's own moved copy is left out: a draft must not simply copy the same patient's report
    neighbours = LibraryNeighbours(out / LIBRARY, tour.spec, service=tour.service, exclude={"lung1_moved"})
    draft = ReportPipeline(tour.spec, service=tour.service).draft(
        tour.volume,
        segmentation=read_segmentation(tour.files["seg_nrrd"]),
        neighbours=neighbours,
        progress=progress,
    )
    tour.files["report_json"] = atomic_write_text(out / "report_draft.json", draft.to_json())
    tour.files["report_txt"] = atomic_write_text(out / "report_draft.txt", draft.text)
    tour.summary["report"] = {
        "text": draft.text,
        "sentences": [s.to_dict() for s in draft.sentences],
        "warnings": list(draft.warnings),
    }
