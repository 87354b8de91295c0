"""Sparse label images for few-shot segmentation: conventions, workflows, validation, physical mapping.

Convention (docs/ARCHITECTURE.md): 0 = background, 1..254 = structures, 255 = unlabelled. Two workflows produce
such images: *painted slices* (the user fully labels some slices; unpainted voxels on those slices are
background, every other slice is unlabelled) and *scribbles* (explicit background strokes, everything else
255). Labels may live on any grid aligned in physical space with the image (e.g. a flipped axis): labelled
voxels are mapped to the image grid through RAS, never by array index.

Decision: a class with fewer than ``MIN_VOXELS_PER_CLASS`` (3) labelled voxels inside the image is an error,
not a warning: a single voxel is almost always a mis-click and a probe fitted to it is meaningless.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from .classes import SegmentClass, classes_for

UNLABELLED = 255
BACKGROUND = 0
MAX_CLASSES = 254  # 1..254 fit in uint8 next to 255 = unlabelled
MIN_VOXELS_PER_CLASS = 3
LABEL_MODES = ("slices", "scribbles")
BACKGROUND_NAMES = ("background", "bg", "bkg", "other", "outside")

log = logging.getLogger(__name__)


def painted_slices_to_labels(
    labels: np.ndarray, axis: int = 0, slices: list[int] | None = None
) -> np.ndarray:
    """Return a NEW label image where only painted slices are labelled (unpainted voxels there = background).

    ``labels`` is [k, j, i] with 0 = not painted and 1..254 = structures; ``axis`` 0 = axial (k). Painted slices
    are ``slices`` if given, else every slice holding at least one structure voxel. All other slices become 255.
    """
    arr = np.asarray(labels)
    if arr.ndim != 3:
        raise InputError(f"Label image must be 3-D [k, j, i], got shape {arr.shape}.")
    if axis not in (0, 1, 2):
        raise InputError(f"Slice axis must be 0 (k), 1 (j) or 2 (i), got {axis}.")
    other = tuple(a for a in range(3) if a != axis)
    if slices is None:
        painted = np.flatnonzero(((arr > 0) & (arr != UNLABELLED)).any(axis=other))
    else:
        painted = np.asarray(sorted(set(int(s) for s in slices)), dtype=np.int64)
        bad = painted[(painted < 0) | (painted >= arr.shape[axis])]
        if bad.size:
            raise InputError(
                f"Slice indices {bad.tolist()} are outside 0..{arr.shape[axis] - 1} along axis {axis}."
            )
    out = np.full(arr.shape, UNLABELLED, dtype=np.uint8)
    index = [slice(None)] * 3
    index[axis] = painted
    out[tuple(index)] = arr[tuple(index)]
    return out


def is_background_name(name: str, background_names: tuple[str, ...] = BACKGROUND_NAMES) -> bool:
    """True for a painted segment that means "background" in the scribbles workflow (by its name)."""
    return name.strip().lower() in {n.lower() for n in background_names}


@dataclass
class FewShotLabels:
    """A few-shot label image built from painted masks, with what happened on the way."""

    labels: np.ndarray  # uint8 [k, j, i]: 0 background, 1..K structures (mask order), 255 unlabelled
    mode: str
    classes: list[SegmentClass] = field(default_factory=list)  # what values 1..K mean
    painted_slices: list[int] = field(default_factory=list)  # indices along `axis` holding paint
    conflicts: int = 0  # voxels painted in two or more masks (set to unlabelled)
    warnings: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Labelled voxels per class name (plus 'background' and 'unlabelled')."""
        hist = np.bincount(self.labels.ravel(), minlength=256)
        out = {"background": int(hist[BACKGROUND])}
        for cls in self.classes:
            out[cls.name] = int(hist[cls.value])
        out["unlabelled"] = int(hist[UNLABELLED])
        return out


def few_shot_labels(
    structure_masks: list[np.ndarray],
    background_masks: list[np.ndarray] | None = None,
    mode: str = "slices",
    axis: int = 0,
    classes: list[SegmentClass] | None = None,
) -> FewShotLabels:
    """Label image from painted masks: structure i gets value i+1 (``classes[i]``); background paint gets 0.

    mode "slices": every slice (along array ``axis``) holding any paint is fully labelled, unpainted voxels there
    being background (``painted_slices_to_labels``); mode "scribbles": only painted voxels are labelled.
    Voxels painted in more than one mask become unlabelled.
    """
    if mode not in LABEL_MODES:
        raise InputError(f"Unknown labelling mode '{mode}'; use one of {', '.join(LABEL_MODES)}.")
    if not structure_masks:
        raise InputError("No structure was painted; paint at least one structure.")
    if len(structure_masks) > MAX_CLASSES:
        raise InputError(f"{len(structure_masks)} structures; at most {MAX_CLASSES} are supported.")
    background_masks = background_masks or []
    shape = structure_masks[0].shape
    coverage = np.zeros(shape, dtype=np.uint16)
    paint = np.zeros(shape, dtype=np.uint8)
    for value, mask in enumerate(structure_masks, start=1):
        coverage += mask
        paint[mask] = value
    explicit_bg = np.zeros(shape, dtype=bool)
    for mask in background_masks:
        coverage += mask
        explicit_bg |= mask
    painted_any = coverage > 0
    other = tuple(a for a in range(3) if a != axis)
    slices = [int(i) for i in np.flatnonzero(painted_any.any(axis=other))]
    if mode == "slices":
        labels = painted_slices_to_labels(paint, axis=axis, slices=slices)
    else:
        labels = np.full(shape, UNLABELLED, dtype=np.uint8)
        labels[paint > 0] = paint[paint > 0]
    labels[explicit_bg] = BACKGROUND
    conflict = coverage > 1
    conflicts = int(np.count_nonzero(conflict))
    labels[conflict] = UNLABELLED
    warnings = []
    if conflicts:
        warnings.append(f"{conflicts} voxels are painted in more than one segment and were ignored.")
    if not np.any(labels == BACKGROUND):
        warnings.append("No background voxels: paint a 'background' segment or fully paint some slices.")
    named = classes_for(range(1, len(structure_masks) + 1), classes)
    return FewShotLabels(labels, mode, named, slices, conflicts, warnings)


def select_slices(full_labels: np.ndarray, slices: list[int], classes: list[int] | None = None) -> np.ndarray:
    """Labels of fully labelled slices taken from a reference labelmap (benchmarks, tests).

    ``classes`` keeps only those values (renumbered 1..K in the given order); everything else on the chosen
    axial slices is background and every other slice is unlabelled.
    """
    ref = np.asarray(full_labels)
    if classes is not None:
        lab = np.zeros(ref.shape, dtype=np.uint8)
        for n, value in enumerate(classes, start=1):
            lab[ref == value] = n
    else:
        lab = ref.astype(np.uint8)
    return painted_slices_to_labels(lab, axis=0, slices=slices)


@dataclass
class LabelledVoxels:
    """Labelled voxels of the image grid: indices [N,3] as (k, j, i), class index 0..K, K = len(values)."""

    kji: np.ndarray  # int64 [N, 3]
    cls: np.ndarray  # int64 [N]
    values: list[int]  # label value of class index 1..K (index 0 = background)
    counts: dict[int, int]  # label value -> labelled voxels inside the image
    warnings: list[str] = field(default_factory=list)
    full_slices: bool = False  # labels are fully labelled slices (class frequencies are meaningful)


def fully_labelled_slices(mask: np.ndarray, min_fraction: float = 0.95) -> bool:
    """True if, along some axis, every slice touched by labels is (almost) entirely labelled."""
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        per_slice = mask.sum(axis=other)
        touched = per_slice[per_slice > 0]
        size = mask.size // mask.shape[axis]
        if touched.size and np.all(touched >= min_fraction * size):
            return True
    return False


def _check_values(arr: np.ndarray) -> None:
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise InputError(
                "Label image must hold integers (0 background, 1..254 structures, 255 unlabelled)."
            )
    lo, hi = (arr.min(), arr.max()) if arr.size else (0, 0)
    if lo < 0 or hi > UNLABELLED:
        raise InputError(
            f"Label values must be 0 (background), 1..254 (structures) or 255 (unlabelled); found range {lo}..{hi}."
        )


def _grid_corners_ras(shape_kji: tuple[int, ...], ijk_to_ras: np.ndarray) -> np.ndarray:
    k, j, i = shape_kji
    c = np.array([[a, b, d, 1.0] for a in (-0.5, i - 0.5) for b in (-0.5, j - 0.5) for d in (-0.5, k - 0.5)])
    return (ijk_to_ras @ c.T).T[:, :3]


def grids_overlap(shape_a, ijk_to_ras_a, shape_b, ijk_to_ras_b) -> bool:
    """True if grid B's box, expressed in grid A's index space, intersects grid A's box."""
    corners = _grid_corners_ras(shape_b, ijk_to_ras_b)
    idx = (np.linalg.inv(ijk_to_ras_a) @ np.c_[corners, np.ones(8)].T)[:3]  # i, j, k
    lo, hi = idx.min(axis=1), idx.max(axis=1)
    size = np.array(shape_a[::-1], dtype=float)
    return bool(np.all(hi >= -0.5) and np.all(lo <= size - 0.5))


def labelled_voxels(
    labels: np.ndarray,
    labels_ijk_to_ras: np.ndarray,
    image_shape_kji: tuple[int, int, int],
    image_ijk_to_ras: np.ndarray,
) -> LabelledVoxels:
    """Validate a sparse label image and map its labelled voxels onto the image grid (nearest voxel).

    Raises InputError for: not 3-D, bad values, no labels at all, no background, no structure, a label grid
    that does not overlap the image, labels that all fall outside it, or a class with too few voxels inside.
    """
    arr = np.asarray(labels)
    if arr.ndim != 3:
        raise InputError(f"Label image must be 3-D [k, j, i], got shape {arr.shape}.")
    _check_values(arr)
    mask = arr != UNLABELLED
    slices = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))  # the k holding any label
    if not slices.size:
        raise InputError(
            "The label image has no labelled voxels (all 255 = unlabelled). Paint at least one structure (1..254) "
            "and some background (0), or use painted-slices mode."
        )
    # [N, 3] (k, j, i) in the order of argwhere over the whole mask, found in the labelled slices only: a few
    # painted slices of a 512 x 512 x 275 CT take ~5 ms instead of ~110 ms (refit time)
    src_kji = np.argwhere(mask[slices])
    src_kji[:, 0] = slices[src_kji[:, 0]]
    cls_values = arr[tuple(src_kji.T)].astype(np.int64)
    present = np.unique(cls_values).astype(int)
    if BACKGROUND not in present:
        raise InputError(
            "No background (0) labels. Paint background strokes, or label whole slices so unpainted voxels on them "
            "count as background (painted-slices mode)."
        )
    values = [int(v) for v in present if v != BACKGROUND]
    if not values:
        raise InputError("Only background (0) is labelled. Paint at least one structure with a value 1..254.")
    lab_shape = tuple(int(s) for s in arr.shape)
    src_m = np.asarray(labels_ijk_to_ras, dtype=np.float64)
    dst_m = np.asarray(image_ijk_to_ras, dtype=np.float64)
    if not grids_overlap(image_shape_kji, dst_m, lab_shape, src_m):
        raise InputError(
            "The label image does not overlap the image in physical space (compare origins/directions); "
            "labels must be on a grid aligned with the image in RAS/LPS coordinates."
        )
    same = lab_shape == tuple(image_shape_kji) and np.allclose(src_m, dst_m, atol=1e-4)
    if same:
        dst_kji = src_kji
        inside = np.ones(len(src_kji), dtype=bool)
    else:
        to_dst = np.linalg.inv(dst_m) @ src_m
        ijk = src_kji[:, ::-1].astype(np.float64)
        cont = ijk @ to_dst[:3, :3].T + to_dst[:3, 3]
        dst_ijk = np.floor(cont + 0.5).astype(np.int64)
        size = np.array(image_shape_kji[::-1])
        inside = np.all((dst_ijk >= 0) & (dst_ijk < size), axis=1)
        dst_kji = dst_ijk[:, ::-1]
    warnings: list[str] = []
    if not inside.any():
        raise InputError(
            "All labelled voxels lie outside the image; the label image overlaps the image but its labels do not. "
            "Check that the labels were drawn on this image."
        )
    n_out = int((~inside & (cls_values != BACKGROUND)).sum())
    if n_out:
        warnings.append(f"{n_out} structure voxels lie outside the image and were ignored.")
    dst_kji, cls_values = dst_kji[inside], cls_values[inside]
    if not same:  # image-grid order, so a fit does not depend on how the label grid is stored (e.g. flipped)
        order = np.argsort(np.ravel_multi_index(dst_kji.T, image_shape_kji), kind="stable")
        dst_kji, cls_values = dst_kji[order], cls_values[order]
    counts = {int(v): int((cls_values == v).sum()) for v in [BACKGROUND, *values]}
    for v, n in counts.items():
        if n < MIN_VOXELS_PER_CLASS:
            what = "background (0)" if v == BACKGROUND else f"class {v}"
            where = " inside the image" if n_out else ""
            raise InputError(
                f"{what} has only {n} labelled voxel(s){where}; at least {MIN_VOXELS_PER_CLASS} are needed. "
                "Paint more of it, or remove it if it was a mis-click."
            )
    lut = np.zeros(256, dtype=np.int64)
    for n, v in enumerate(values, start=1):
        lut[v] = n
    for w in warnings:
        log.warning(w)
    full = fully_labelled_slices(mask)
    return LabelledVoxels(dst_kji.astype(np.int64), lut[cls_values], values, counts, warnings, full)


def balanced_sample(cls: np.ndarray, num_classes: int, max_per_class: int, seed: int = 0) -> np.ndarray:
    """Indices of at most ``max_per_class`` random voxels per class (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    picks = []
    for c in range(num_classes):
        idx = np.flatnonzero(cls == c)
        if len(idx) > max_per_class:
            idx = np.sort(rng.choice(idx, max_per_class, replace=False))
        picks.append(idx)
    return np.concatenate(picks)
