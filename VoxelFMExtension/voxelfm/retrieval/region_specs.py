"""`--roi` values: parsed and checked when the command line is read, turned into a Region when the query runs.

box:R,A,S,SIZE_R,SIZE_A,SIZE_S   an RAS-aligned box (centre and size in mm, like Slicer's ROI)
point:R,A,S,RADIUS               a ball around a point
mask:FILE[:LABEL]                non-zero voxels (or voxels equal to LABEL) of a label image, any grid
FILE.json                        a Slicer markups ROI file (.mrk.json, LPS or RAS, any orientation)
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..imaging.file_checks import check_label_map
from .regions import BoxRegion, MaskRegion, Region, SphereRegion

FORMS = "box:R,A,S,SIZE_R,SIZE_A,SIZE_S | point:R,A,S,RADIUS | mask:FILE[:LABEL] | ROI.mrk.json"


@dataclass(frozen=True)
class RegionSpec:
    kind: str  # box | point | mask | markups
    values: tuple[float, ...] = ()
    path: str = ""
    label: int | None = None

    def region(self) -> Region:
        """The Region this spec names (reads the mask / markups file)."""
        if self.kind == "box":
            return BoxRegion.centred(self.values[:3], self.values[3:])
        if self.kind == "point":
            return SphereRegion(tuple(self.values[:3]), self.values[3])  # type: ignore[arg-type]
        if self.kind == "mask":
            return _mask_region(Path(self.path), self.label)
        return markups_roi(Path(self.path))


def _numbers(text: str, count: int, form: str) -> tuple[float, ...]:
    parts = [p.strip() for p in text.split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise InputError(f"{form} needs {count} comma-separated numbers, got {text!r}") from None
    if len(values) != count or not all(math.isfinite(v) for v in values):
        raise InputError(f"{form} needs {count} finite comma-separated numbers, got {text!r}")
    return values


def parse_region_spec(text: str) -> RegionSpec:
    """Parse one --roi value; InputError naming the accepted forms when it is not one of them."""
    raw = (text or "").strip()
    kind, _, rest = raw.partition(":")
    kind = kind.lower()
    if kind == "box":
        values = _numbers(rest, 6, "box:R,A,S,SIZE_R,SIZE_A,SIZE_S")
        if min(values[3:]) <= 0:
            raise InputError(f"box sizes must be positive mm, got {list(values[3:])}")
        return RegionSpec("box", values)
    if kind == "point":
        values = _numbers(rest, 4, "point:R,A,S,RADIUS")
        if values[3] <= 0:
            raise InputError(f"the point radius must be positive mm, got {values[3]:g}")
        return RegionSpec("point", values)
    if kind == "mask":
        path, label = rest, None
        head, sep, tail = rest.rpartition(":")
        if sep and tail.strip().lstrip("-").isdigit():
            path, label = head, int(tail)
        if not Path(path).exists():
            raise InputError(f"mask file {path!r} not found")
        return RegionSpec("mask", path=path, label=label)
    if raw.lower().endswith(".json"):
        if not Path(raw).is_file():
            raise InputError(f"markups ROI file {raw!r} not found")
        return RegionSpec("markups", path=raw)
    raise InputError(f"{text!r} is not a region; use {FORMS}")


def _mask_region(path: Path, label: int | None) -> MaskRegion:
    from ..imaging.io import read_volume  # SimpleITK off `voxelfm --help` (query_cmd parses regions here)

    labels = read_volume(str(path), check_hu=False)
    arr = check_label_map(labels.array, path, "region mask (a label map)")  # a CT is not a mask
    mask = arr == label if label is not None else arr != 0
    if not mask.any():
        what = f"label {label}" if label is not None else "any non-zero voxel"
        present = [int(v) for v in np.unique(arr) if v != 0]
        listed = ", ".join(map(str, present[:20])) or "none (only background, 0)"
        raise InputError(f"The region mask {path} has no voxel with {what}; the labels present are {listed}.")
    return MaskRegion(mask, labels.ijk_to_ras, path.name)


def markups_roi(path: Path) -> BoxRegion:
    """The first ROI of a Slicer markups JSON file (centre, size, orientation; LPS or RAS)."""
    from ..imaging.io import lps_geometry_to_ijk_to_ras  # as above

    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        roi = next(m for m in doc.get("markups", []) if str(m.get("type", "")).upper() == "ROI")
        center = [float(v) for v in roi["center"]]
        size = tuple(float(v) for v in roi["size"])
        orientation = [float(v) for v in roi.get("orientation", [1, 0, 0, 0, 1, 0, 0, 0, 1])]
    except (OSError, ValueError, KeyError, StopIteration, TypeError) as exc:
        raise InputError(
            f"{path} is not a Slicer markups ROI file (need markups[].type 'ROI' with center/size): {exc}"
        ) from exc
    if len(center) != 3 or len(size) != 3 or len(orientation) != 9:
        raise InputError(f"{path}: ROI center/size need 3 numbers and orientation 9.")
    if str(roi.get("coordinateSystem", "LPS")).upper() == "LPS":
        to_ras = lps_geometry_to_ijk_to_ras(center, (1.0, 1.0, 1.0), orientation)
    else:
        to_ras = np.eye(4)
        to_ras[:3, :3] = np.asarray(orientation).reshape(3, 3)
        to_ras[:3, 3] = center
    return BoxRegion(to_ras, size)  # type: ignore[arg-type]
