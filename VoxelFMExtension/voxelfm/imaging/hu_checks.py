"""Plausibility checks on CT intensities: warn (never fail) when values do not look like Hounsfield units.

Why warnings and not errors: the reference asserts a loose "looks like HU" rule, but a user may legitimately feed
a non-CT or pre-normalised image (e.g. to experiment); the model will then see out-of-distribution input and the
user should be told, not stopped.
"""

from __future__ import annotations

import numpy as np


def hu_warnings(array: np.ndarray, clipped: bool = False) -> list[str]:
    """Return human-readable warnings about ``array`` not looking like CT HU (empty list when plausible).

    ``clipped`` says whether the values were already clipped to the training range; the reference's rule
    (min < 800 and max > -100 after clipping to [-1000, 1900]) is applied in both cases.
    """
    if array.size == 0:
        return ["The image is empty."]
    lo = float(np.min(array))
    hi = float(np.max(array))
    out: list[str] = []
    if lo == hi:
        return [f"Every voxel has the same value ({lo:.4g}); the image holds no anatomy to analyse."]
    if lo >= 0.0 and hi <= 1.0 and np.issubdtype(array.dtype, np.floating):
        out.append(
            f"Intensities lie in [{lo:.3g}, {hi:.3g}]: this looks like a normalised (0..1) image, not CT in "
            "Hounsfield units. VoxelFM expects raw HU (air about -1000, water 0); load the original CT instead."
        )
        return out
    if not (lo < 800.0 and hi > -100.0):
        what = "after clipping to the training range" if clipped else "in the image"
        out.append(
            f"Intensities {what} span [{lo:.4g}, {hi:.4g}] HU, which does not look like CT (expected air near "
            "-1000 HU and soft tissue near 0..100 HU). Check that this is a CT image with rescale slope/intercept "
            "applied; results on non-CT data are unreliable."
        )
    return out
