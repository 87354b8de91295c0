"""Segmentation files for the draft: a labelmap (+ optional names JSON) or a Slicer .seg.nrrd (names kept).

WHY here: the measurements must name each segment as the user named it. A .seg.nrrd carries names, label
values and layers in its header (Segment<N>_Name/_LabelValue/_Layer/_ID); a labelmap gets names from a JSON
beside it (``labels.nii.gz`` -> ``labels.json``: {"1": "liver", ...}, as TotalSegmentator writes) or from
``names``, else "label N"; a named label without voxels is kept as an empty segment (the draft says so).
Files are only read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..files.documents import read_mapping
from ..imaging.volume import Volume
from .measurements import SegmentMeasurement, measure_mask


@dataclass(frozen=True)
class SegmentRef:
    name: str
    segment_id: str
    layer: int
    value: int


@dataclass
class SegmentationData:
    layers: list[Volume]  # integer label volumes (one per .seg.nrrd layer; one for a labelmap)
    segments: list[SegmentRef]
    source: str = ""

    def measurements(self) -> list[SegmentMeasurement]:
        out = []
        for ref in self.segments:
            layer = self.layers[ref.layer]
            m = measure_mask(layer.array == ref.value, layer.ijk_to_ras, ref.name, ref.segment_id)
            out.append(m.with_source(self.source))
        return out


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".nhdr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _names_beside(path: Path) -> dict[int, str]:
    side = path.with_name(_stem(path) + ".json")
    if not side.is_file():
        return {}
    what = "JSON object of label value -> segment name"
    raw = read_mapping(side, InputError, "segment names file", f"write a {what}")
    try:
        return {int(k): str(v) for k, v in raw.items()}
    except ValueError as exc:
        raise InputError(f"{side}: expected a {what} ({exc}).") from exc


def _seg_nrrd_segments(image, n_layers: int) -> list[SegmentRef]:
    keys = set(image.GetMetaDataKeys())
    refs, n = [], 0
    while f"Segment{n}_ID" in keys:

        def meta(field: str, default: str = "", n: int = n) -> str:
            key = f"Segment{n}_{field}"
            return image.GetMetaData(key) if key in keys else default

        layer = int(meta("Layer", "0") or 0)
        if layer >= n_layers:
            raise InputError(f"Segment {meta('Name')!r} names layer {layer}, but the file has {n_layers}.")
        refs.append(
            SegmentRef(meta("Name", meta("ID")), meta("ID"), layer, int(meta("LabelValue", "1") or 1))
        )
        n += 1
    return refs


def read_segmentation(path: str | os.PathLike, names: dict[int, str] | None = None) -> SegmentationData:
    """A labelmap or .seg.nrrd as label layers + named segments (a labelmap's segments: its labels present and
    those its names file names; a named label without voxels is an empty segment)."""
    import SimpleITK as sitk  # files only: the Slicer logic passes arrays (torch- and SimpleITK-free module)

    from ..imaging.io import lps_geometry_to_ijk_to_ras  # as above

    path = Path(path)
    if not path.is_file():
        raise InputError(f"Segmentation {path} not found.")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(f"Segmentation {path} cannot be read ({str(exc).splitlines()[0]}).") from exc
    if image.GetDimension() != 3:
        raise InputError(
            f"Segmentation {path} has {image.GetDimension()} dimensions; a 3D labelmap is needed."
        )
    ijk_to_ras = lps_geometry_to_ijk_to_ras(image.GetOrigin(), image.GetSpacing(), image.GetDirection())
    n_layers = image.GetNumberOfComponentsPerPixel()
    arr = sitk.GetArrayFromImage(image)
    if not np.issubdtype(arr.dtype, np.integer) and not np.all(arr == np.round(arr)):
        raise InputError(f"Segmentation {path} holds non-integer values; a labelmap is needed.")
    arrays = [arr] if n_layers == 1 else [arr[..., n] for n in range(n_layers)]
    layers = [Volume(a.astype(np.int32), ijk_to_ras, path.name) for a in arrays]
    segments = _seg_nrrd_segments(image, n_layers) if "Segment0_ID" in image.GetMetaDataKeys() else []
    if not segments:
        given = names if names is not None else _names_beside(path)
        present = {int(v) for v in np.unique(layers[0].array) if v != 0}
        if not present:
            raise InputError(f"Segmentation {path} contains no segments (all voxels are 0).")
        # a named label without voxels is an empty segment: measured (and stated) as empty, not dropped
        values = sorted(present | {v for v in given if v != 0})
        segments = [SegmentRef(given.get(v, f"label {v}"), str(v), 0, v) for v in values]
    return SegmentationData(layers, segments, str(path))


def _box_in(volume: Volume, layer: Volume) -> tuple[np.ndarray, np.ndarray] | None:
    """The box (ijk min, max) of ``volume``'s continuous index space that holds every labelled voxel centre
    of ``layer`` (None when it has none): the 8 corners of the labels' index box mapped through RAS."""
    labelled = layer.array != 0
    # index ranges along i, j, k (array axes 2, 1, 0) that hold labels
    ranges = [np.nonzero(labelled.any(axis=other))[0] for other in ((0, 1), (0, 2), (1, 2))]
    if not len(ranges[0]):
        return None
    corners = np.array(
        [[i, j, k, 1.0] for i in ranges[0][[0, -1]] for j in ranges[1][[0, -1]] for k in ranges[2][[0, -1]]]
    )
    to_ijk = np.linalg.inv(volume.ijk_to_ras) @ layer.ijk_to_ras
    mapped = (corners @ to_ijk.T)[:, :3]
    return mapped.min(0), mapped.max(0)


def check_overlap(segmentation: SegmentationData, volume: Volume) -> None:
    """InputError when no labelled voxel of ``segmentation`` lies inside ``volume`` (labels drawn on another
    scan would otherwise be measured as if they were this one's). Exact for "no overlap": every labelled voxel
    centre lies in the box its index box maps to."""
    extent = np.asarray(volume.shape_ijk, np.float64)
    boxes = [b for layer in segmentation.layers if (b := _box_in(volume, layer)) is not None]
    if not boxes or any(np.all(lo <= extent - 0.5) and np.all(hi >= -0.5) for lo, hi in boxes):
        return
    raise InputError(
        f"The segmentation {segmentation.source or 'given'} does not overlap the CT {volume.name or 'image'} "
        "at all (no labelled voxel lies inside the CT's field of view): it was drawn on another scan or its "
        "geometry is wrong. Give the segmentation made on this CT."
    )
