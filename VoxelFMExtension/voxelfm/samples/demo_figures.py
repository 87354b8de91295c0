"""The tour's pictures: every one titled, with a legend and the numbers it shows written on it.

Slices are taken through RAS positions (``retrieval.thumbnails.axial_panel``: the axial plane through a point
of any volume, whatever its grid), so the original and its moved copy are shown in the same physical frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from PIL import Image

from ..files.atomic import atomic_write
from ..imaging.pictures import ct_gray
from ..imaging.volume import Volume
from ..retrieval.thumbnails import axial_panel
from ..segment.metrics import dice

PREDICTION = (1.0, 0.85, 0.0)  # yellow
REFERENCE = (0.9, 0.1, 0.1)  # red
LABELLED = (0.1, 0.8, 0.3)  # green
PANEL_PX = 256


def save(fig: Figure, out: Path) -> Path:
    FigureCanvasAgg(fig)
    return atomic_write(Path(out), lambda p: fig.savefig(p, format="png", dpi=100), suffix=".png")


def _off(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def features_figure(overview_png: Path, model: str, grid: Sequence[int], out: Path) -> Path:
    """The PCA overview picture (rows: axial, coronal, sagittal mid-slices) with titles and a legend."""
    img = np.asarray(Image.open(overview_png).convert("RGB"))
    height_in = 9.8 * img.shape[0] / img.shape[1] + 1.3  # the picture at 9.8 in wide, plus title and legend
    fig = Figure(figsize=(10, height_in))
    ax = fig.add_axes((0.01, 0.9 / height_in, 0.98, 1 - 1.3 / height_in))
    ax.imshow(img)
    _off(ax)
    w = img.shape[1]
    ax.set_title(
        f"Features of lung1 ({model}, feature grid {' x '.join(map(str, grid))}): CT (left) | PCA colours (right)",
        fontsize=11,
    )
    for n, name in enumerate(("axial", "coronal", "sagittal")):
        ax.text(6, (n + 0.08) * img.shape[0] / 3, name + " mid-slice", color="white", fontsize=9, va="top")
        ax.text(w / 2 + 6, (n + 0.08) * img.shape[0] / 3, "CT + PCA", color="white", fontsize=9, va="top")
    fig.text(
        0.02,
        0.015,
        "Colour = first 3 principal components of the feature vectors as red, green, blue. Places with similar "
        "colour have similar features;\nthe model was never told what lung, bone or soft tissue are.",
        fontsize=9,
    )
    return save(fig, out)


def _window(shape: tuple[int, int], centre: tuple[float, float], half: int) -> tuple[slice, slice]:
    r0 = int(np.clip(centre[0] - half, 0, max(shape[0] - 2 * half, 0)))
    c0 = int(np.clip(centre[1] - half, 0, max(shape[1] - 2 * half, 0)))
    return slice(r0, r0 + 2 * half), slice(c0, c0 + 2 * half)


def _contour(ax, mask: np.ndarray, colour, width: float = 1.6) -> None:
    if mask.any() and not mask.all():
        ax.contour(mask.astype(np.float32), levels=[0.5], colors=[colour], linewidths=width)


def segmentation_figure(
    volume: Volume,
    prediction: np.ndarray,
    reference: np.ndarray,
    labelled: Sequence[int],
    dice_all: float,
    dice_unlabelled: float | None,
    out: Path,
) -> Path:
    """Labelled slice(s) and the slices around them: prediction (yellow) against the reference (red)."""
    fg = np.flatnonzero(reference.reshape(reference.shape[0], -1).any(axis=1))
    slices = sorted({int(k) for k in fg} | set(labelled))[:5]
    k_rows, k_cols = np.nonzero(reference[labelled[0]])
    half = max(40, int(1.5 * max(np.ptp(k_rows), np.ptp(k_cols))))
    rs, cs = _window(reference.shape[1:], (k_rows.mean(), k_cols.mean()), half)
    fig = Figure(figsize=(3.2 * len(slices), 4.4))
    for n, k in enumerate(slices):
        ax = fig.add_subplot(1, len(slices), n + 1)
        ax.imshow(ct_gray(volume.array[k][rs, cs]), cmap="gray", vmin=0, vmax=1)
        pred = prediction[k][rs, cs] > 0
        over = np.zeros((*pred.shape, 4), dtype=np.float32)
        over[pred] = (*PREDICTION, 0.45)
        ax.imshow(over)
        ref = reference[k][rs, cs] > 0
        if k in labelled:
            _contour(ax, ref, LABELLED, 2.2)
            ax.set_title(f"slice {k}: LABELLED (the input)", fontsize=10, color="darkgreen")
        else:
            _contour(ax, ref, REFERENCE)
            d = (
                dice(prediction[k] > 0, reference[k] > 0)
                if (reference[k].any() or prediction[k].any())
                else None
            )
            ax.set_title(
                f"slice {k}: not labelled" + (f", Dice {d:.2f}" if d is not None else ""), fontsize=10
            )
        _off(ax)
    unl = "n/a" if dice_unlabelled is None else f"{dice_unlabelled:.2f}"
    fig.suptitle(
        f"Few-shot tumour segmentation from {len(labelled)} labelled axial slice(s) {list(labelled)}: "
        f"Dice {dice_all:.2f} on all slices, {unl} on the slices never labelled",
        fontsize=11,
    )
    fig.legend(
        handles=[
            Patch(color=PREDICTION, alpha=0.6, label="prediction (whole volume)"),
            Line2D([], [], color=REFERENCE, label="reference label (truth)"),
            Line2D([], [], color=LABELLED, lw=2.2, label="the labelled slice given to the probe"),
        ],
        loc="lower center",
        ncol=3,
        fontsize=9,
    )
    fig.subplots_adjust(left=0.01, right=0.99, top=0.86, bottom=0.12, wspace=0.04)
    return save(fig, out)


def _pixel(centre: np.ndarray, point: np.ndarray, fov: float, pixels: int = PANEL_PX) -> tuple[float, float]:
    """(column, row) of ``point`` in ``axial_panel(volume, centre, fov)`` (columns towards patient left)."""
    step = fov / pixels
    col = (centre[0] + fov / 2 - step / 2 - point[0]) / step
    row = (centre[1] + fov / 2 - step / 2 - point[1]) / step
    return col, row


def landmarks_figure(
    reference: Volume,
    target: Volume,
    names: Sequence[str],
    ref_points: np.ndarray,
    truth: np.ndarray,
    predicted: np.ndarray,
    out: Path,
    fov: float = 120.0,
) -> Path:
    """Per landmark: the reference point in lung1 (top) and the found vs true point in the moved copy (bottom)."""
    n = len(names)
    fig = Figure(figsize=(2.6 * n, 6.4))
    for p, name in enumerate(names):
        ax = fig.add_subplot(2, n, p + 1)
        ax.imshow(axial_panel(reference, ref_points[p], fov), cmap="gray", vmin=0, vmax=1)
        ax.plot(*_pixel(ref_points[p], ref_points[p], fov), "+", color=LABELLED, ms=16, mew=2.5)
        ax.set_title(f"{name}\n(given on lung1)", fontsize=9)
        _off(ax)
        ax = fig.add_subplot(2, n, n + p + 1)
        ax.imshow(axial_panel(target, truth[p], fov), cmap="gray", vmin=0, vmax=1)
        ax.plot(*_pixel(truth[p], truth[p], fov), "o", mfc="none", color=LABELLED, ms=14, mew=2)
        ax.plot(*_pixel(truth[p], predicted[p], fov), "x", color=REFERENCE, ms=12, mew=2.5)
        err = float(np.linalg.norm(predicted[p] - truth[p]))
        dz = float(predicted[p][2] - truth[p][2])
        ax.set_title(f"found {err:.1f} mm from the truth\n(of which {dz:+.1f} mm in height)", fontsize=9)
        _off(ax)
    errors = np.linalg.norm(predicted - truth, axis=1)
    fig.suptitle(
        f"Landmark transfer from lung1 to its moved and cropped copy: median error {np.median(errors):.1f} mm, "
        f"max {errors.max():.1f} mm ({fov:.0f} mm views)",
        fontsize=11,
    )
    fig.legend(
        handles=[
            Line2D([], [], marker="+", ls="", color=LABELLED, ms=12, mew=2.5, label="point given on lung1"),
            Line2D(
                [], [], marker="o", ls="", mfc="none", color=LABELLED, ms=10, label="true place in the copy"
            ),
            Line2D(
                [], [], marker="x", ls="", color=REFERENCE, ms=10, mew=2.5, label="place found by VoxelFM"
            ),
        ],
        loc="lower center",
        ncol=3,
        fontsize=9,
    )
    fig.subplots_adjust(left=0.01, right=0.99, top=0.86, bottom=0.08, wspace=0.05, hspace=0.25)
    return save(fig, out)


def retrieval_figure(
    query: Volume,
    rows: Sequence[tuple[str, np.ndarray, float | None, list[tuple[str, Volume, np.ndarray, float]]]],
    out: Path,
    fov: float = 330.0,
) -> Path:
    """One row per query: the query (its centre, with a box of ``half`` mm when it is a region) and its hits,
    best first, each with its similarity score."""
    n_cols = 1 + max(len(hits) for *_, hits in rows)
    fig = Figure(figsize=(2.9 * n_cols, 3.4 * len(rows) + 0.8))
    for r, (title, centre, half, hits) in enumerate(rows):
        view = fov if half is None else max(8 * half, 100.0)
        ax = fig.add_subplot(len(rows), n_cols, r * n_cols + 1)
        ax.imshow(axial_panel(query, centre, view), cmap="gray", vmin=0, vmax=1)
        _box(ax, half, view)
        ax.set_title(title, fontsize=9, color="navy")
        _off(ax)
        for h, (case_id, volume, place, score) in enumerate(hits):
            ax = fig.add_subplot(len(rows), n_cols, r * n_cols + 2 + h)
            ax.imshow(axial_panel(volume, place, view), cmap="gray", vmin=0, vmax=1)
            _box(ax, half, view)
            ax.set_title(f"#{h + 1} {case_id}\nsimilarity {score:.3f}", fontsize=9)
            _off(ax)
    fig.suptitle(
        "Similar-case retrieval in a 3-case library: query (left), hits best first (cosine similarity, 1 = same)",
        fontsize=11,
    )
    fig.legend(
        handles=[Patch(fill=False, edgecolor=PREDICTION, lw=2, label="query region / best-matching block")],
        loc="lower center",
        fontsize=9,
    )
    fig.subplots_adjust(left=0.01, right=0.99, top=0.86, bottom=0.07, wspace=0.05, hspace=0.35)
    return save(fig, out)


def _box(ax, half: float | None, view: float) -> None:
    if half is None:
        return
    c, h = PANEL_PX / 2, half * PANEL_PX / view
    ax.add_patch(Rectangle((c - h, c - h), 2 * h, 2 * h, fill=False, edgecolor=PREDICTION, lw=2))
