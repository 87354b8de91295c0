"""Core dataclasses <-> what travels between client and server, both directions in one place.

Sparse labels: only the k-slices holding a labelled voxel (not 255) travel, with the label grid's shape and
geometry; every other slice is 255 (unlabelled). That is a complete description of the labels, so a refit
request needs no server-side session. Probes travel as the probe files' bytes (the one probe format).
"""

from __future__ import annotations

import base64
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..features.volume_features import VolumeFeatures
from ..files.probe_paths import probe_paths
from ..imaging.volume import Volume
from ..segment.classes import SegmentClass
from ..segment.probe import SegmentationProbe
from ..segment.probe_file import load_segmentation_probe, save_segmentation_probe
from ..segment.result import SegmentationResult
from .wire import BITS, CODEC, RAW, Frame, compress, decompress

UNLABELLED = 255


def encode_array(arr: np.ndarray, codec: str = CODEC) -> dict[str, Any]:
    data = base64.b64encode(compress(arr, codec)).decode("ascii")
    return {"dtype": arr.dtype.name, "shape": list(arr.shape), "codec": codec, "data": data}


def decode_array(d: dict[str, Any]) -> np.ndarray:
    if "data" not in d:
        raise InputError("array data is missing from the payload.")
    payload = decode_base64(d["data"], "array data")
    return decompress(payload, d["dtype"], tuple(d["shape"]), d["codec"])


# ---- labels


def sparse_labels(labels: Volume) -> dict[str, Any]:
    """The labelled k-slices of a label volume (0 / 1..254 / 255), its shape and geometry."""
    arr = np.asarray(labels.array)
    if arr.ndim != 3:
        raise InputError(f"Label image must be 3-D [k, j, i], got shape {arr.shape}.")
    slices = [int(k) for k in _labelled_slices(arr)]
    return {
        "shape": [int(s) for s in arr.shape],
        "ijk_to_ras": np.asarray(labels.ijk_to_ras, dtype=np.float64).tolist(),
        "slices": slices,
        "values": encode_array(np.ascontiguousarray(arr[slices])),
    }


def _labelled_slices(arr: np.ndarray) -> np.ndarray:
    """k indices of the slices holding a labelled voxel. WHY the uint64 view: 8 voxels per comparison, so a
    refit's scan of a 72 M-voxel label grid costs ~3 ms instead of ~15 ms."""
    rows = arr.reshape(arr.shape[0], -1)
    if arr.dtype == np.uint8 and rows.flags.c_contiguous and rows.shape[1] % 8 == 0:
        return np.flatnonzero((rows.view(np.uint64) != np.uint64(0xFFFF_FFFF_FFFF_FFFF)).any(axis=1))
    return np.flatnonzero((rows != UNLABELLED).any(axis=1))


def labels_from_sparse(d: dict[str, Any], max_voxels: int) -> Volume:
    """The label volume a sparse description stands for (InputError when it is inconsistent or too big)."""
    shape = tuple(int(s) for s in d["shape"])
    if len(shape) != 3 or min(shape) < 1:
        raise InputError(f"labels shape {list(shape)} must be 3 positive sizes [k, j, i].")
    if int(np.prod(shape, dtype=np.int64)) > max_voxels:
        raise InputError(f"labels of shape {list(shape)} exceed the server's limit of {max_voxels} voxels.")
    slices = [int(k) for k in d["slices"]]
    if len(set(slices)) != len(slices) or any(not 0 <= k < shape[0] for k in slices):
        raise InputError(f"labelled slices must be distinct indices in 0..{shape[0] - 1}.")
    expected = [len(slices), *shape[1:]]
    if [int(v) for v in d["values"].get("shape", ())] != expected:  # checked before anything is decompressed
        raise InputError(f"labelled slices hold shape {d['values'].get('shape')}, expected {expected}.")
    values = decode_array(d["values"])
    arr = np.full(shape, UNLABELLED, dtype=values.dtype)
    arr[slices] = values
    return Volume(arr, _matrix(d["ijk_to_ras"], "labels ijk_to_ras"))


def _matrix(value: Any, what: str) -> np.ndarray:
    m = np.asarray(value, dtype=np.float64)
    if m.shape != (4, 4) or not np.all(np.isfinite(m)) or abs(np.linalg.det(m[:3, :3])) < 1e-12:
        raise InputError(f"{what} must be a finite, invertible 4x4 matrix.")
    return m


# ---- probes


def files_of_probe(save: Callable[[Any, Path], tuple[Path, Path]], probe: Any) -> dict[str, str]:
    """A probe (any kind, written by ``save``) as its two files' contents: the .json text and the .safetensors
    bytes (base64). The one wire form of every probe kind."""
    with tempfile.TemporaryDirectory() as tmp:
        weights, meta = save(probe, Path(tmp) / "probe")
        return {"json": meta.read_text(), "weights": base64.b64encode(weights.read_bytes()).decode("ascii")}


def probe_of_files(load: Callable[[Path], Any], d: dict[str, str]) -> Any:
    """The probe that ``files_of_probe`` sent, read back by ``load`` (from its header path)."""
    with tempfile.TemporaryDirectory() as tmp:
        weights, meta = probe_paths(Path(tmp) / "probe")
        weights.write_bytes(decode_base64(d["weights"], "probe weights"))
        meta.write_text(d["json"])
        return load(meta)


def decode_base64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError as exc:
        raise InputError(f"{what}: not base64 ({exc}).") from exc


def probe_files(probe: SegmentationProbe) -> dict[str, str]:
    return files_of_probe(save_segmentation_probe, probe)


def probe_from_files(d: dict[str, str]) -> SegmentationProbe:
    return probe_of_files(load_segmentation_probe, d)


# ---- results


def features_frame(feats: VolumeFeatures) -> Frame:
    meta = {
        "prepared_shape": list(feats.prepared_shape),
        "model": feats.model,
        "preprocess": feats.preprocess,
        "extraction": feats.extraction,
    }
    arrays = {n: getattr(feats, n) for n in ("cls", "registers", "patch", "grid_to_ras", "prepared_to_ras")}
    return Frame(meta, arrays)


def features_from_frame(frame: Frame) -> VolumeFeatures:
    return VolumeFeatures.from_parts(frame.arrays, frame.meta)


def segmentation_frame(result: SegmentationResult, with_probe: bool) -> Frame:
    meta: dict[str, Any] = {
        "classes": [c.to_dict() for c in result.classes],
        "warnings": list(result.warnings),
    }
    if with_probe and result.probe is not None:
        meta["probe"] = probe_files(result.probe)
    arrays = {
        "labelmap": np.asarray(result.labelmap, dtype=np.uint8),
        "ijk_to_ras": np.asarray(result.ijk_to_ras),
    }
    return Frame(meta, arrays)


def segmentation_from_frame(frame: Frame, probe: SegmentationProbe | None = None) -> SegmentationResult:
    meta = frame.meta
    if "probe" in meta:
        probe = probe_from_files(meta["probe"])
    return SegmentationResult(
        labelmap=frame.arrays["labelmap"],
        ijk_to_ras=frame.arrays["ijk_to_ras"],
        classes=[SegmentClass.from_dict(c) for c in meta.get("classes", [])],
        probe=probe,
        warnings=list(meta.get("warnings", [])),
    )


RESULT_CODECS = {"labelmap": BITS, "ijk_to_ras": RAW, "grid_to_ras": RAW, "prepared_to_ras": RAW}
