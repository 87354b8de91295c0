"""Default colours of label values, so that a class looks the same in Slicer, .seg.nrrd files and PNG overlays."""

from __future__ import annotations

PALETTE: tuple[tuple[float, float, float], ...] = (
    (0.90, 0.30, 0.24),
    (0.20, 0.60, 0.86),
    (0.18, 0.80, 0.44),
    (0.95, 0.77, 0.06),
    (0.61, 0.35, 0.71),
    (0.90, 0.49, 0.13),
    (0.10, 0.74, 0.61),
    (0.93, 0.44, 0.64),
    (0.58, 0.65, 0.65),
    (0.40, 0.26, 0.13),
)


def label_color(value: int) -> tuple[float, float, float]:
    """RGB (0..1) of label value ``value`` >= 1; the palette repeats after its 10 colours."""
    return PALETTE[(int(value) - 1) % len(PALETTE)]
