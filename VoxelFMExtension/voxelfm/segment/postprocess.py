"""Optional clean-up of a predicted labelmap (off by default: it can delete true disconnected parts)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from ..errors import InputError


@dataclass
class PostprocessConfig:
    largest_component: bool = False  # keep only the largest 26-connected component of each structure
    fill_holes: bool = False  # fill enclosed background holes of each structure (3-D)

    @property
    def enabled(self) -> bool:
        return self.largest_component or self.fill_holes

    def to_dict(self) -> dict[str, bool]:
        return {"largest_component": self.largest_component, "fill_holes": self.fill_holes}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PostprocessConfig:
        unknown = sorted(set(d) - {"largest_component", "fill_holes"})
        if unknown:
            raise InputError(
                f"postprocess: unknown setting(s) {unknown}; known: largest_component, fill_holes."
            )
        return cls(bool(d.get("largest_component", False)), bool(d.get("fill_holes", False)))


def postprocess_labelmap(labelmap: np.ndarray, cfg: PostprocessConfig) -> np.ndarray:
    """Return a cleaned copy of ``labelmap`` [k,j,i] (the input itself when both steps are off); removed voxels
    become background (0)."""
    if not cfg.enabled:
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
