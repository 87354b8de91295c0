"""Class identity of a segmentation: label value, name, colour and terminology, carried from paint to prediction.

One type for the CLI (label values of a label file + ``--class-names``), the probe file and the Slicer logic
(painted segments): a prediction's label value ``v`` always means the class whose ``value`` is ``v``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import InputError
from ..imaging.palette import label_color


@dataclass(frozen=True)
class SegmentClass:
    value: int  # label value 1..254 in label images and predicted labelmaps
    name: str
    color: tuple[float, float, float]  # RGB 0..1
    terminology: str = ""  # Slicer terminology entry string, "" if none

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": int(self.value),
            "name": self.name,
            "color": [round(float(c), 4) for c in self.color],
            "terminology": self.terminology,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "class") -> SegmentClass:
        try:
            value = int(d["value"])
            name = str(d["name"])
            color = tuple(float(c) for c in d.get("color", label_color(value)))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{where}: needs 'value' (1..254), 'name' and an RGB 'color' ({exc}).") from exc
        if not 1 <= value <= 254 or len(color) != 3:
            raise InputError(f"{where}: value {value} must be 1..254 and color 3 numbers, got {list(color)}.")
        return cls(value, name, color, str(d.get("terminology") or ""))  # type: ignore[arg-type]


def default_class(value: int) -> SegmentClass:
    return SegmentClass(int(value), f"structure_{int(value)}", label_color(value))


def classes_for(values: Iterable[int], given: Iterable[SegmentClass] | None = None) -> list[SegmentClass]:
    """The class of each label value: the given one when named, else a default name and palette colour."""
    by_value = {c.value: c for c in given or ()}
    return [by_value.get(int(v)) or default_class(int(v)) for v in values]


def classes_from_names(names: str | None, values: Iterable[int] | None = None) -> list[SegmentClass]:
    """Classes from a comma-separated name list for label values 1..K (the CLI's ``--class-names``)."""
    if not names:
        return []
    parts = [s.strip() for s in names.split(",")]
    if any(not p for p in parts):
        raise InputError(f"--class-names has an empty name in {names!r}; give one name per label 1..K.")
    if values is not None:
        values = sorted(int(v) for v in values)
        if len(parts) != len(values):
            raise InputError(
                f"--class-names gives {len(parts)} names but the labels hold {len(values)} structures "
                f"(values {values}); give exactly one name per structure, in label-value order."
            )
        return [SegmentClass(v, n, label_color(v)) for v, n in zip(values, parts, strict=True)]
    return [SegmentClass(v, n, label_color(v)) for v, n in enumerate(parts, start=1)]
