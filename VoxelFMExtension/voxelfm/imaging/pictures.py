"""Pictures for people: CT slices with a PCA colouring of the patch features, label overlays.

Rendering samples the feature grid at the ORIGINAL voxel positions through the 4x4 geometry, so a picture
also shows that features land where they belong.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..files.atomic import atomic_write
from .palette import label_color
from .resample import resample_to_grid
from .volume import Volume


def pca_rgb(patch: np.ndarray, n: int = 3) -> np.ndarray:
    """[d,h,w,C] -> [d,h,w,3] in [0,1]: first three principal components, robustly scaled."""
    x = patch.reshape(-1, patch.shape[-1]).astype(np.float64)
    x = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    comps = x @ vt[:n].T
    lo, hi = np.percentile(comps, 1, axis=0), np.percentile(comps, 99, axis=0)
    rgb = np.clip((comps - lo) / np.maximum(hi - lo, 1e-9), 0, 1)
    return rgb.reshape(*patch.shape[:3], n).astype(np.float32)


def _slice_geometry(volume: Volume, axis: int, index: int) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape [k,j,i] and ijk_to_ras of a one-voxel-thick slab of the volume along array axis ``axis``."""
    shape = list(volume.array.shape)
    shape[axis] = 1
    offset = np.eye(4)
    offset[2 - axis, 3] = index  # array axis 0 = k (matrix column 2)
    return tuple(shape), volume.ijk_to_ras @ offset  # type: ignore[return-value]


def _stretch_rows(panel: np.ndarray, factor: float) -> np.ndarray:
    rows = max(1, int(round(panel.shape[0] * factor)))
    idx = np.minimum((np.arange(rows) / factor).astype(int), panel.shape[0] - 1)
    return panel[idx]


def ct_gray(values: np.ndarray, window: tuple[float, float] = (-1000.0, 400.0)) -> np.ndarray:
    lo, hi = window
    return np.clip((values - lo) / (hi - lo), 0, 1)


def feature_overview_png(
    volume: Volume, patch: np.ndarray, grid_to_ras: np.ndarray, out: str | Path, alpha: float = 0.55
) -> Path:
    """Three orthogonal mid-slices: CT (grey) | CT + PCA colours of the features."""
    rgb_grid = pca_rgb(patch)
    rows = []
    for axis in (0, 1, 2):
        index = volume.array.shape[axis] // 2
        shape, m = _slice_geometry(volume, axis, index)
        ct = np.take(volume.array, [index], axis=axis).reshape([s for a, s in enumerate(shape) if a != axis])
        col = resample_to_grid(rgb_grid, grid_to_ras, shape, m, mode="linear", fill=0.0)
        col = col.reshape(*ct.shape, 3)
        gray = ct_gray(ct)[..., None].repeat(3, axis=-1)
        inside = (col.sum(-1, keepdims=True) > 0).astype(np.float32)
        blend = gray * (1 - alpha * inside) + col * alpha * inside
        panel = np.concatenate([gray, blend], axis=1)
        if axis:  # coronal / sagittal: slice index k upwards, rows stretched to the physical aspect ratio
            sp = volume.spacing  # (i, j, k)
            stretch = float(sp[2] / (sp[0] if axis == 1 else sp[1]))
            panel = _stretch_rows(panel[::-1], stretch)
        rows.append(panel)
    return save_panels(rows, out)


def label_overlay_png(
    volume: Volume,
    labels: np.ndarray,
    out: str | Path,
    slices: list[int] | None = None,
    reference: np.ndarray | None = None,
    alpha: float = 0.5,
) -> Path:
    """Axial slices of the CT with a label map overlaid (and an optional reference label outline)."""
    from scipy import ndimage  # scipy (~0.2 s) only when a picture is drawn

    k_count = volume.array.shape[0]
    if slices is None:
        focus = reference if reference is not None else labels
        fg = np.flatnonzero(focus.reshape(k_count, -1).any(axis=1))
        centre = int(fg[len(fg) // 2]) if fg.size else k_count // 2
        slices = sorted({max(0, min(k_count - 1, centre + d)) for d in (-2, 0, 2)})
    background = (0.0, 0.0, 0.0)
    palette = np.array([background] + [label_color(v) for v in range(1, int(labels.max()) + 1)], np.float32)
    panels = []
    for k in slices:
        gray = ct_gray(volume.array[k])[..., None].repeat(3, axis=-1)
        lab = labels[k]
        over = gray.copy()
        mask = lab > 0
        over[mask] = gray[mask] * (1 - alpha) + palette[np.clip(lab[mask], 0, len(palette) - 1)] * alpha
        if reference is not None:
            ref = reference[k] > 0
            edge = ref & ~ndimage.binary_erosion(ref)
            over[edge] = (1.0, 1.0, 0.0)
        panels.append(np.concatenate([gray, over], axis=1))
    return save_panels(panels, out)


def save_panels(rows: list[np.ndarray], out: str | Path, max_width: int = 1400, min_width: int = 900) -> Path:
    """Stack RGB float panels vertically (padding to a common width) and write a PNG atomically."""
    from PIL import Image  # PIL only when a picture is written

    width = max(r.shape[1] for r in rows)
    padded = [np.pad(r, ((0, 2), (0, width - r.shape[1]), (0, 0))) for r in rows]
    img = (np.concatenate(padded, axis=0) * 255).astype(np.uint8)
    pil = Image.fromarray(img)
    if pil.width > max_width or pil.width < min_width:
        target = max_width if pil.width > max_width else min_width
        pil = pil.resize((target, int(pil.height * target / pil.width)), Image.Resampling.BILINEAR)
    return atomic_write(Path(out), lambda p: pil.save(p, format="PNG"), suffix=".png")
