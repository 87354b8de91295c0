"""The bytes on the wire between the VoxelFM client and server: compressed arrays and frames.

WHY zstandard with a byte shuffle: measured on a real chest CT (LIDC-IDRI-0314, 512x512x275 int16, 144 MB,
docs/DEPLOYMENT.md), zstd level 1 over byte-shuffled voxels gives ratio 2.30 (62.8 MB), as good as blosc2
ZSTD+SHUFFLE (2.33), while the `zstandard` wheel has no dependencies (blosc2 pulls httpx, pydantic, rich,
msgpack, ndindex, threadpoolctl into the client's and Slicer's base install). Plain zstd L1 gives 1.77.

A frame is ``MAGIC, u32 header length, header JSON, array payloads``; the header lists each array (name, dtype,
shape, codec, compressed size) and carries plain-data ``meta``. Decoding never trusts sizes: every array must
decompress to exactly dtype x shape bytes, with the output size capped before decompressing.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zstandard

from ..errors import InputError
from ..imaging.volume import Volume

PROTOCOL_VERSION = 2  # bump when a request or reply changes shape; client and server must agree
MAGIC = b"VFM1"
CODEC = "zstd-shuffle"  # zstd level 1 over the bytes of each element split into planes
BITS = "zstd-bits"  # uint8 labels: one packed bit plane per bit the largest value needs, then zstd level 1
RAW = "raw"
CODECS = (CODEC, BITS, RAW)
ARRAY_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64", "float16")
_LEVEL = 1


def _shuffle(arr: np.ndarray) -> np.ndarray:
    flat = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
    size = arr.dtype.itemsize
    return flat if size == 1 else np.ascontiguousarray(flat.reshape(-1, size).T)


def _unshuffle(planes: np.ndarray, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    if dtype.itemsize == 1:
        return planes.view(dtype).reshape(shape)
    out = np.empty(shape, dtype)
    out.reshape(-1).view(np.uint8).reshape(-1, dtype.itemsize)[:] = planes.reshape(dtype.itemsize, -1).T
    return out


def _inflate(payload: bytes, expected: int) -> np.ndarray:
    """Exactly ``expected`` bytes decompressed straight into an array (3x faster than via bytes, no copy)."""
    out = np.empty(expected, np.uint8)
    view, filled = memoryview(out), 0
    reader = zstandard.ZstdDecompressor().stream_reader(payload)
    while filled < expected:
        got = reader.readinto(view[filled:])
        if not got:
            break
        filled += got
    if filled != expected or reader.read(1):
        raise InputError(
            f"array payload does not hold exactly the {expected} bytes its dtype and shape need."
        )
    return out


def _pack_bits(arr: np.ndarray) -> bytes:
    """WHY: a labelmap's values need 1-4 bits, and zstd over 1/8 of the bytes is 3-4x faster to encode and
    decode than over the bytes themselves (512x512x275 lung labelmap: 2.4 MB -> 0.5 MB). First byte: planes."""
    if arr.dtype != np.uint8:
        raise InputError(f"codec {BITS} takes uint8 labels, not {arr.dtype}.")
    flat = np.ascontiguousarray(arr).reshape(-1)
    planes = max(1, int(flat.max(initial=0)).bit_length())
    if planes == 1:
        packed = np.packbits(flat)
    else:
        packed = np.concatenate([np.packbits((flat >> p) & 1) for p in range(planes)])
    return bytes([planes]) + zstandard.ZstdCompressor(level=_LEVEL).compress(packed)


def _unpack_bits(payload: bytes, count: int) -> np.ndarray:
    planes = payload[0] if payload else 0
    if not 1 <= planes <= 8:
        raise InputError(f"{BITS} payload names {planes} bit planes; expected 1 to 8.")
    per_plane = (count + 7) // 8
    packed = _inflate(payload[1:], planes * per_plane)
    out = np.unpackbits(packed[:per_plane], count=count)
    for p in range(1, planes):
        out |= np.unpackbits(packed[p * per_plane : (p + 1) * per_plane], count=count) << p
    return out


def compress(arr: np.ndarray, codec: str = CODEC) -> bytes:
    """The payload of ``arr`` in ``codec`` (its dtype and shape travel in the frame header)."""
    if codec == RAW:
        return np.ascontiguousarray(arr).tobytes()
    if codec == BITS:
        return _pack_bits(arr)
    return zstandard.ZstdCompressor(level=_LEVEL).compress(_shuffle(arr))


def decompress(payload: bytes, dtype: str, shape: tuple[int, ...], codec: str) -> np.ndarray:
    """The array a payload holds; InputError when it is not exactly dtype x shape."""
    if dtype not in ARRAY_DTYPES:
        raise InputError(f"array dtype {dtype!r} is not accepted; use one of {', '.join(ARRAY_DTYPES)}.")
    dt = np.dtype(dtype)
    if any(int(s) < 0 for s in shape):
        raise InputError(f"array shape {list(shape)} has a negative size.")
    expected = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    if codec == RAW:
        if len(payload) != expected:
            raise InputError(
                f"array payload holds {len(payload)} bytes, but dtype {dtype} x shape {list(shape)} needs {expected}."
            )
        return np.frombuffer(payload, dt).reshape(shape).copy()
    if codec not in CODECS:
        raise InputError(f"unknown array codec {codec!r}; this side speaks {', '.join(CODECS)}.")
    if codec == BITS and dt != np.uint8:
        raise InputError(f"codec {BITS} holds uint8 labels, not {dtype}.")
    try:
        if codec == BITS:
            return _unpack_bits(payload, expected).reshape(tuple(int(s) for s in shape))
        planes = _inflate(payload, expected)
    except zstandard.ZstdError as exc:
        raise InputError(f"array payload is not valid {codec} data ({exc}).") from exc
    return _unshuffle(planes, dt, tuple(int(s) for s in shape))


@dataclass
class Frame:
    """Plain-data ``meta`` plus named arrays: one request or reply body."""

    meta: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def encode(self, codecs: dict[str, str] | None = None) -> bytes:
        entries, payloads = [], []
        for name, arr in self.arrays.items():
            codec = (codecs or {}).get(name, CODEC)
            data = compress(arr, codec)
            entries.append(
                {
                    "name": name,
                    "dtype": arr.dtype.name,
                    "shape": list(arr.shape),
                    "codec": codec,
                    "size": len(data),
                }
            )
            payloads.append(data)
        header = json.dumps({"meta": self.meta, "arrays": entries}).encode()
        return b"".join([MAGIC, struct.pack("<I", len(header)), header, *payloads])


def frame_header(body: bytes) -> tuple[dict[str, Any], int]:
    """(header, offset of the first payload) of a frame, checked for shape; nothing is decompressed."""
    if len(body) < 8 or body[:4] != MAGIC:
        raise InputError("body is not a VoxelFM frame (wrong magic); client and server versions may differ.")
    (length,) = struct.unpack("<I", body[4:8])
    if 8 + length > len(body):
        raise InputError("frame header is truncated.")
    try:
        header = json.loads(body[8 : 8 + length])
    except ValueError as exc:
        raise InputError(f"frame header is not JSON ({exc}).") from exc
    if not isinstance(header, dict) or not isinstance(header.get("arrays"), list):
        raise InputError("frame header lacks its array list.")
    total = 8 + length + sum(int(e.get("size", 0)) for e in header["arrays"])
    if total != len(body):
        raise InputError(f"frame is {len(body)} bytes but its header describes {total}.")
    return header, 8 + length


def decode_frame(body: bytes) -> Frame:
    header, offset = frame_header(body)
    arrays = {}
    for entry in header["arrays"]:
        try:
            name, dtype, codec, size = (
                str(entry["name"]),
                str(entry["dtype"]),
                str(entry["codec"]),
                int(entry["size"]),
            )
            shape = tuple(int(s) for s in entry["shape"])
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"frame array entry {entry!r} is malformed ({exc}).") from exc
        arrays[name] = decompress(body[offset : offset + size], dtype, shape, codec)
        offset += size
    return Frame(header.get("meta") or {}, arrays)


def volume_frame(volume: Volume) -> Frame:
    """The frame of one volume (an upload, or a server library's case image sent back): its voxels and geometry."""
    return Frame(
        {"ijk_to_ras": np.asarray(volume.ijk_to_ras, dtype=np.float64).tolist()}, {"voxels": volume.array}
    )


def volume_from_frame(frame: Frame, name: str = "") -> Volume:
    """The volume a ``volume_frame`` holds; InputError when it lacks its voxels or a 4x4 geometry."""
    voxels = frame.arrays.get("voxels")
    m = np.asarray(frame.meta.get("ijk_to_ras"), dtype=np.float64)
    if voxels is None or voxels.ndim != 3 or m.shape != (4, 4):
        raise InputError("a volume frame holds 3-D 'voxels' and a 4x4 'ijk_to_ras'.")
    return Volume(voxels, m, name)
