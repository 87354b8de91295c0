"""Optional clean-up of a predicted labelmap (off by default: it can delete true disconnected parts)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass
class PostprocessConfig:
    largest_component: bool = False  # keep only the largest 26-connected component of each structure
    fill_holes: bool = False  # fill enclosed background holes of each structure (3-D)


def postprocess_labelmap(labelmap: np.ndarray, cfg: PostprocessConfig) -> np.ndarray:
    """Return a cleaned copy of ``labelmap`` [k,j,i] (the input itself when both steps are off); removed voxels
    become background (0)."""
    if not (cfg.largest_component or cfg.fill_holes):
        return labelmap
    out = np.array(labelmap, copy=True)
    values = [int(v) for v in np.unique(out) if v != 0]
    structure = np.ones((3, 3, 3), dtype=bool)
    for v in values:
        mask = out == v
        if cfg.largest_component:
            comp, n = ndimage.label(mask, structure=structure)
            if n > 1:
                sizes = np.bincount(comp.ravel())
                sizes[0] = 0
                keep = comp == int(sizes.argmax())
                out[mask & ~keep] = 0
                mask = keep
        if cfg.fill_holes:
            filled = ndimage.binary_fill_holes(mask)
            out[filled & (out == 0)] = v
    return out
