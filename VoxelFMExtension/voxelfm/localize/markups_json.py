"""Slicer markups JSON (``.mrk.json``): point lists in and out, ROIs out.

Facts from Slicer's markups schema (Modules/Loadable/Markups/Resources/Schema, v1.0.x): the file is an object
with ``@schema`` and a ``markups`` list; each markup has a ``type`` (Fiducial = point list, Line, Angle, Curve,
ClosedCurve, Plane, ROI), a ``coordinateSystem`` ("LPS", the default, or "RAS"), ``coordinateUnits`` ("mm" or
"um", or a [code, scheme, meaning] triple) and ``controlPoints`` with ``label``, ``description``, ``position``
and ``positionStatus`` ("undefined" / "preview" / "defined"; Slicer 5 also writes "missing", its
vtkMRMLMarkupsNode::PositionMissing: a point looked for and not there, which we write for a landmark not
found). Slicer reads the first markup of a file and writes LPS; so do we. An ROI stores ``center``, ``size`` and a 3x3 ``orientation`` (row-major, columns = the
box axes) in the file's coordinate system.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..files.atomic import atomic_write_text
from ..files.documents import read_mapping
from .points import LPS_FROM_RAS, PointList

SCHEMA = "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/markups-schema-v1.0.3.json#"
POINT_LIST_TYPE = "Fiducial"
_UNIT_SCALE = {"mm": 1.0, "um": 1e-3}
_SKIPPED_STATUS = ("undefined", "preview", "missing")
MISSING = "missing"  # vtkMRMLMarkupsNode::GetPositionStatusAsString(PositionMissing)
# Slicer writes this orientation for a point whose RAS orientation is the identity (LPS flip of the axes).
_POINT_ORIENTATION = [-1.0, -0.0, -0.0, -0.0, -1.0, -0.0, 0.0, 0.0, 1.0]


def _load(path: Path) -> dict[str, Any]:
    data = read_mapping(path, InputError, "markups JSON file", "save the points from Slicer as .mrk.json")
    if not isinstance(data.get("markups"), list):
        raise InputError(
            f"{path} is JSON but not a Slicer markups file (no 'markups' list); save the points from Slicer's "
            "Markups module as a point list (.mrk.json)."
        )
    if not data["markups"]:
        raise InputError(f"{path} holds no markups; it must contain one point list.")
    return data


def _unit_scale(markup: dict[str, Any], path: Path) -> float:
    units = markup.get("coordinateUnits", "mm")
    if isinstance(units, list) and units:
        units = units[0]
    if units not in _UNIT_SCALE:
        raise InputError(f"{path}: coordinateUnits {units!r} is not supported; use 'mm' or 'um'.")
    return _UNIT_SCALE[units]


def _to_ras_matrix(markup: dict[str, Any], path: Path) -> np.ndarray:
    system = markup.get("coordinateSystem", "LPS")
    if system not in ("LPS", "RAS"):
        raise InputError(f"{path}: coordinateSystem {system!r} is not 'LPS' or 'RAS'.")
    return LPS_FROM_RAS if system == "LPS" else np.eye(3)


def _position(point: Any, n: int, path: Path) -> list[float]:
    pos = point.get("position") if isinstance(point, dict) else None
    ok = isinstance(pos, list) and len(pos) == 3
    ok = ok and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in pos)
    if not ok:
        raise InputError(f"{path}: control point {n + 1} has no valid 'position' (three finite numbers).")
    return [float(v) for v in pos]


def _default_label(markup: dict[str, Any], n: int) -> str:
    fmt = str(markup.get("labelFormat") or "%N-%d")
    return fmt.replace("%N", str(markup.get("name") or "P")).replace("%d", str(n + 1))


def read_point_list(path: str | os.PathLike) -> PointList:
    """The point list of a ``.mrk.json`` file in RAS mm (LPS or RAS files; unplaced points are skipped).

    A file whose (first) markup is not a point list (a line, curve, ROI, ...) is refused with a clear error.
    """
    path = Path(path)
    markup = _load(path)["markups"][0]
    kind = markup.get("type") if isinstance(markup, dict) else None
    if kind != POINT_LIST_TYPE:
        what = f"a markups {kind!r}" if isinstance(kind, str) else "a markup without a valid 'type'"
        raise InputError(
            f"{path} holds {what}, not a point list; landmarks must be a point list (markups type "
            f"'{POINT_LIST_TYPE}'). Create them with 'Point list' in Slicer's Markups module."
        )
    to_ras = _to_ras_matrix(markup, path)
    scale = _unit_scale(markup, path)
    points = markup.get("controlPoints", [])
    if not isinstance(points, list):
        raise InputError(f"{path}: 'controlPoints' must be a list.")
    names, rows, descriptions = [], [], []
    for n, point in enumerate(points):
        position = _position(point, n, path)
        if point.get("positionStatus", "defined") in _SKIPPED_STATUS:
            continue
        names.append(str(point.get("label") or _default_label(markup, n)))
        rows.append(np.asarray(position) * scale @ to_ras.T)
        descriptions.append(str(point.get("description") or ""))
    name = str(markup.get("name") or path.name.split(".")[0])
    return PointList(names, np.asarray(rows).reshape(-1, 3), descriptions, name)


def _document(markups: list[dict[str, Any]]) -> str:
    return json.dumps({"@schema": SCHEMA, "markups": markups}, indent=4, allow_nan=False) + "\n"


def point_list_markup(points: PointList) -> dict[str, Any]:
    """The markup object of a point list, positions in LPS (as Slicer writes them)."""
    lps = points.lps
    control = [
        {
            "id": str(n + 1),
            "label": points.names[n],
            "description": points.descriptions[n],
            "associatedNodeID": "",
            "position": [float(v) for v in lps[n]],
            "orientation": list(_POINT_ORIENTATION),
            "selected": True,
            "locked": False,
            "visibility": True,
            "positionStatus": MISSING if points.missing[n] else "defined",
        }
        for n in range(len(points))
    ]
    return {
        "type": POINT_LIST_TYPE,
        "name": points.name,
        "coordinateSystem": "LPS",
        "coordinateUnits": "mm",
        "locked": False,
        "fixedNumberOfControlPoints": False,
        "labelFormat": "%N-%d",
        "lastUsedControlPointNumber": len(points),
        "controlPoints": control,
    }


def write_point_list(points: PointList, path: str | os.PathLike) -> Path:
    """Write a point list as ``.mrk.json`` (LPS, atomically)."""
    return atomic_write_text(Path(path), _document([point_list_markup(points)]))


def roi_markup(
    name: str,
    center_ras: Sequence[float],
    size_mm: Sequence[float],
    axes_ras: np.ndarray,
    description: str = "",
) -> dict[str, Any]:
    """The markup object of a box ROI: centre, edge lengths and axes (columns, RAS) written in LPS."""
    center = np.asarray(center_ras, dtype=np.float64) @ LPS_FROM_RAS
    orientation = LPS_FROM_RAS @ np.asarray(axes_ras, dtype=np.float64)
    return {
        "type": "ROI",
        "name": name,
        "coordinateSystem": "LPS",
        "coordinateUnits": "mm",
        "locked": False,
        "fixedNumberOfControlPoints": False,
        "labelFormat": "%N-%d",
        "lastUsedControlPointNumber": 1,
        "roiType": "Box",
        "center": [float(v) for v in center],
        "orientation": [float(v) for v in orientation.ravel()],
        "size": [float(v) for v in size_mm],
        "insideOut": False,
        "controlPoints": [
            {
                "id": "1",
                "label": name,
                "description": description,
                "associatedNodeID": "",
                "position": [float(v) for v in center],
                "orientation": list(_POINT_ORIENTATION),
                "selected": True,
                "locked": False,
                "visibility": True,
                "positionStatus": "defined",
            }
        ],
    }


def write_roi(markup: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write one ROI markup (from ``roi_markup``) as ``.mrk.json``: Slicer reads one markup per file."""
    return atomic_write_text(Path(path), _document([markup]))
