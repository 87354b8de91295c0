"""Which files are images: the suffixes VoxelFM reads, DICOM detection, and listing a folder's images.

One list for every command, so "which files does VoxelFM pick up from a folder" has one answer. Names are
matched case-insensitively on the whole name, so two-part suffixes (``.nii.gz``) work.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
LABELMAP_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")  # single-file formats a label map is written to

_DICOM_PROBE = 5  # files inspected per folder: a series folder holds nothing but DICOM, so a few suffice


def has_suffix(path: str | os.PathLike, suffixes: Iterable[str]) -> bool:
    name = Path(path).name.lower()
    return any(name.endswith(s) for s in suffixes)


def is_image_file(path: str | os.PathLike) -> bool:
    """An existing file with one of the IMAGE_SUFFIXES."""
    p = Path(path)
    return p.is_file() and has_suffix(p, IMAGE_SUFFIXES)


def is_dicom_file(path: str | os.PathLike) -> bool:
    """``.dcm``, or the DICM magic at byte 128 (many series are exported without a suffix)."""
    p = Path(path)
    if p.suffix.lower() == ".dcm":
        return True
    try:
        with open(p, "rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return False


def is_dicom_dir(path: str | os.PathLike) -> bool:
    """A folder whose first few files include a DICOM file (read as a series by ``read_volume``)."""
    p = Path(path)
    return p.is_dir() and any(is_dicom_file(f) for f in sorted(p.iterdir())[:_DICOM_PROBE] if f.is_file())


def list_images(folder: str | os.PathLike, recursive: bool = True, dicom: bool = True) -> list[Path]:
    """Image files and (with ``dicom``) DICOM series folders under ``folder``, in a stable order.

    Folder by folder (sorted, top-down, symlinks followed): the folder itself when it holds a DICOM series,
    then its image files by name. ``recursive=False`` looks at ``folder`` alone.
    """
    found: list[Path] = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs.sort()
        r = Path(root)
        names = sorted(files)
        others = [r / f for f in names if not has_suffix(f, IMAGE_SUFFIXES)]
        if dicom and any(is_dicom_file(f) for f in others[:_DICOM_PROBE]):
            found.append(r)
        found += [r / f for f in names if has_suffix(f, IMAGE_SUFFIXES)]
        if not recursive:
            break
    return found
