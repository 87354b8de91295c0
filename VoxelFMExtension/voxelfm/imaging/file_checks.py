"""Byte-level checks of image files before their voxels are trusted.

WHY: SimpleITK (ITK's NIfTI reader) fills the missing part of a truncated .nii or .nii.gz with zeros, ignores
gzip CRC errors, and replaces NaN/inf voxels of NIfTI float images by 0 — all silently, so a result computed
on such voxels would be wrong with exit 0. (Its NRRD and MetaImage readers do fail on short data.) So:
- a gzip stream (.nii.gz; .nrrd/.nhdr with gzip encoding) is decompressed end to end, which checks its
  CRC and length (Python's gzip), and the decompressed size is compared with what the header promises;
- an uncompressed .nii must be as long as its header says;
- NIfTI float data is scanned for non-finite values, refused with the same message as for every other
  format (``non_finite_message``).
The scan streams the file in blocks (no second copy of a large CT in memory).
"""

from __future__ import annotations

import gzip
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..errors import InputError

_BLOCK = 1 << 22
# NIfTI datatype code -> numpy dtype of the floating types that can hold NaN/inf
_NIFTI_FLOATS = {16: "f4", 64: "f8"}
_NRRD_TYPES = {
    "int8": 1, "uint8": 1, "signed char": 1, "uchar": 1, "unsigned char": 1, "int16": 2, "short": 2,
    "uint16": 2, "ushort": 2, "unsigned short": 2, "int32": 4, "int": 4, "uint32": 4, "uint": 4,
    "unsigned int": 4, "int64": 8, "uint64": 8, "float": 4, "double": 8,
}  # fmt: skip


def non_finite_message(what: str, count: int) -> str:
    return (
        f"{what} contains {count} NaN/infinite voxel value(s). Fix or replace them (e.g. by -1000 HU) before "
        "running VoxelFM."
    )


def check_image_file(path: Path) -> None:
    """InputError when ``path`` (a NIfTI or NRRD file) is truncated, corrupt, or holds non-finite floats."""
    name = path.name.lower()
    try:
        if name.endswith((".nii", ".nii.gz")):
            _check_nifti(path, is_gzip_file(path))  # readers take an uncompressed file named .nii.gz too
        elif name.endswith((".nrrd", ".nhdr")):
            _check_nrrd(path)
    except (EOFError, OSError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise InputError(
            f"{path} is damaged ({_reason(exc)}): its voxels cannot be trusted (a reader would fill the gap "
            "with zeros). Copy or export the image again."
        ) from exc


def is_gzip_file(path: Path) -> bool:
    """The gzip magic at the start (a .nii.gz, or gzip data under another name)."""
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, EOFError):
        return "the compressed data ends early: the file is truncated"
    text = str(exc) or type(exc).__name__
    return "CRC check failed: the compressed data is corrupt" if "CRC" in text else text


def _blocks(f: BinaryIO) -> Iterator[bytes]:
    while block := f.read(_BLOCK):
        yield block


# --- NIfTI --------------------------------------------------------------------------------------------


def _nifti_header(head: bytes, path: Path) -> tuple[int, int, int, str]:
    """(data offset, expected data bytes, datatype code, byte order) of a NIfTI-1 or NIfTI-2 header."""
    for order in "<>":
        size = struct.unpack(order + "i", head[:4])[0] if len(head) >= 4 else 0
        if size == 348 and len(head) >= 348:
            dims = struct.unpack(order + "8h", head[40:56])
            dtype, bitpix = struct.unpack(order + "2h", head[70:74])
            offset = int(struct.unpack(order + "f", head[108:112])[0])
        elif size == 540 and len(head) >= 540:
            dtype, bitpix = struct.unpack(order + "2h", head[12:16])
            dims = struct.unpack(order + "8q", head[16:80])
            offset = int(struct.unpack(order + "q", head[168:176])[0])
        else:
            continue
        ndim = min(max(int(dims[0]), 1), 7)
        count = int(np.prod([max(int(d), 1) for d in dims[1 : ndim + 1]], dtype=np.int64))
        return max(offset, size), (count * max(int(bitpix), 1) + 7) // 8, int(dtype), order
    raise InputError(
        f"Could not read {path} as a NIfTI image (its header is not a NIfTI header). The file may be truncated "
        "or not an image; re-export it."
    )


def _check_nifti(path: Path, gz: bool) -> None:
    with gzip.open(path, "rb") if gz else open(path, "rb") as f:
        head = f.read(540)
        offset, expected, dtype, order = _nifti_header(head, path)
        data = _skip(head, f, offset)
        got, bad = _scan(data, _NIFTI_FLOATS.get(dtype), order)
    if got < expected:
        raise InputError(
            f"{path} is truncated: its header promises {expected} bytes of voxel data but only {got} are "
            "there, and the missing voxels would be read as zeros. Copy or export the image again."
        )
    if bad:
        raise InputError(non_finite_message(path.name, bad))


def _skip(head: bytes, f: BinaryIO, offset: int) -> Iterator[bytes]:
    """The data blocks that follow byte ``offset`` of a stream whose first bytes are ``head``."""
    if len(head) > offset:
        yield head[offset:]
    else:
        f.read(offset - len(head))
    yield from _blocks(f)


def _scan(blocks: Iterator[bytes], dtype: str | None, order: str) -> tuple[int, int]:
    """(bytes seen, non-finite values among them when ``dtype`` is a float type)."""
    total = bad = 0
    carry = b""
    size = np.dtype(dtype).itemsize if dtype else 1
    for block in blocks:
        total += len(block)
        if dtype is None:
            continue
        block = carry + block
        usable = len(block) - len(block) % size
        values = np.frombuffer(block[:usable], dtype=np.dtype(dtype).newbyteorder(order))
        bad += int(values.size - np.count_nonzero(np.isfinite(values)))
        carry = block[usable:]
    return total, bad


# --- NRRD ---------------------------------------------------------------------------------------------


def _nrrd_fields(f: BinaryIO) -> tuple[dict[str, str], int]:
    """Header fields (lower-case keys) and the byte offset where attached data starts."""
    fields: dict[str, str] = {}
    first = f.readline()
    if not first.startswith(b"NRRD"):
        return fields, -1
    while True:
        line = f.readline()
        if not line or not line.strip():
            return fields, f.tell()
        text = line.decode("latin-1").rstrip("\r\n")
        if ":" in text and not text.startswith("#"):
            key, value = text.split(":", 1)
            fields[key.strip().lower()] = value.lstrip("=").strip()


def _check_nrrd(path: Path) -> None:
    with open(path, "rb") as f:
        fields, offset = _nrrd_fields(f)
        if offset < 0 or fields.get("encoding", "raw").lower() not in ("gzip", "gz"):
            return  # raw/other encodings: ITK's reader checks the length itself
        if any(k in fields for k in ("line skip", "lineskip", "byte skip", "byteskip")):
            return
        detached = fields.get("data file") or fields.get("datafile")
        if detached is None:
            f.seek(offset)
            got = _gzip_length(f)
    if detached is not None:
        target = path.parent / detached
        if " " in detached or not target.is_file():
            return  # a file list or pattern: left to ITK
        with open(target, "rb") as g:
            got = _gzip_length(g)
    expected = _nrrd_bytes(fields)
    if expected is not None and got < expected:
        raise InputError(
            f"{path} is truncated: its header promises {expected} bytes of voxel data but the compressed "
            f"data holds {got}. Copy or export the image again."
        )


def _gzip_length(f: BinaryIO) -> int:
    with gzip.GzipFile(fileobj=f, mode="rb") as z:
        return _scan(_blocks(z), None, "=")[0]


def _nrrd_bytes(fields: dict[str, str]) -> int | None:
    size = _NRRD_TYPES.get(fields.get("type", "").lower())
    try:
        sizes = [int(v) for v in fields.get("sizes", "").split()]
    except ValueError:
        return None
    return int(np.prod(sizes, dtype=np.int64)) * size if size and sizes else None


_LABEL_VALUES_MAX = 1000  # more distinct values than any label map holds: an intensity image


def check_label_map(array: np.ndarray, path: str | Path, what: str = "label map") -> np.ndarray:
    """The voxels of a label map as int32; InputError naming ``path`` when they are not labels: fractions,
    negative values or thousands of distinct values (a CT given where a label map belongs)."""
    arr = np.asarray(array)
    if arr.size and not np.issubdtype(arr.dtype, np.integer) and not np.all(arr == np.round(arr)):
        raise InputError(
            f"{path} is not a {what}: its values are not whole numbers (labels are integers: 0 background, "
            "1, 2, ... structures). Give the label map, not an image."
        )
    if arr.size and float(arr.min()) < 0:
        raise InputError(
            f"{path} is not a {what}: it holds negative values (down to {float(arr.min()):.4g}), like a CT in "
            "Hounsfield units. Give the label map (0 background, 1, 2, ... structures), not the image."
        )
    sample = arr[tuple(slice(None, None, max(1, n // 64)) for n in arr.shape)]
    distinct = len(np.unique(sample))
    if distinct > _LABEL_VALUES_MAX:
        raise InputError(
            f"{path} is not a {what}: it holds {distinct}+ different values, like an intensity image. Give the "
            "label map (0 background, 1, 2, ... structures), not the image."
        )
    return arr.astype(np.int32)
