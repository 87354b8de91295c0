"""Read and write images with exact geometry; the ONE place where LPS (ITK/DICOM) meets RAS (Slicer).

SimpleITK reports origin/direction in LPS. ``Volume.ijk_to_ras`` is RAS, so the first two rows of the 3x4 geometry
flip sign (``lps_geometry_to_ijk_to_ras`` / ``ijk_to_ras_to_lps_geometry``). Voxel data are never reoriented: the
array keeps the file's storage order (as the reference does), only the matrix describes where voxels are.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..files.atomic import atomic_write, file_mode
from .dicom import read_dicom_series
from .file_checks import check_image_file, is_gzip_file, non_finite_message
from .formats import is_dicom_file
from .hu_checks import hu_warnings
from .volume import Volume

READ_EXTENSIONS = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
WRITE_EXTENSIONS = READ_EXTENSIONS
_IMAGE_IO = {
    ".nii": "NiftiImageIO",
    ".nii.gz": "NiftiImageIO",
    ".nrrd": "NrrdImageIO",
    ".nhdr": "NrrdImageIO",
    ".mha": "MetaImageIO",
    ".mhd": "MetaImageIO",
}
_DETACHED = (".nhdr", ".mhd")  # header + separate data file
_LPS_RAS = np.diag([-1.0, -1.0, 1.0])
# Voxel sizes outside this range (mm) are not clinical CT: usually a header in metres/cm or a lost spacing.
PLAUSIBLE_SPACING_MM = (0.05, 30.0)


# ---------------------------------------------------------------- LPS <-> RAS (the only place) ---------------
def lps_geometry_to_ijk_to_ras(origin, spacing, direction) -> np.ndarray:
    """ITK/SimpleITK (origin, spacing, flat row-major 3x3 direction), all LPS -> 4x4 ijk_to_ras (RAS)."""
    d = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    m = np.eye(4)
    m[:3, :3] = _LPS_RAS @ d @ np.diag(np.asarray(spacing, dtype=np.float64))
    m[:3, 3] = _LPS_RAS @ np.asarray(origin, dtype=np.float64)
    return m


def ijk_to_ras_to_lps_geometry(ijk_to_ras: np.ndarray) -> tuple[tuple, tuple, tuple]:
    """4x4 ijk_to_ras -> SimpleITK (origin, spacing, direction) in LPS."""
    m = np.asarray(ijk_to_ras, dtype=np.float64)
    lin = _LPS_RAS @ m[:3, :3]
    spacing = np.linalg.norm(lin, axis=0)
    if np.any(spacing <= 0) or not np.all(np.isfinite(m)):
        raise InputError(f"Invalid ijk_to_ras matrix (zero-length or non-finite axis):\n{m}")
    direction = lin / spacing
    origin = _LPS_RAS @ m[:3, 3]
    return tuple(origin.tolist()), tuple(spacing.tolist()), tuple(direction.ravel().tolist())


# ---------------------------------------------------------------- SimpleITK <-> Volume -----------------------
def volume_from_sitk(image: sitk.Image, name: str = "", dtype=np.float32) -> Volume:
    """SimpleITK image -> Volume (array [k,j,i] cast to ``dtype``; pass dtype=None to keep the pixel type)."""
    image = _as_3d_scalar(image, name or "image")
    arr = sitk.GetArrayFromImage(image)
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    m = lps_geometry_to_ijk_to_ras(image.GetOrigin(), image.GetSpacing(), image.GetDirection())
    return Volume(arr, m, name)


def volume_to_sitk(volume: Volume) -> sitk.Image:
    """Volume -> SimpleITK image with LPS geometry (array dtype kept)."""
    return array_to_sitk(volume.array, volume.ijk_to_ras)


def array_to_sitk(array: np.ndarray, ijk_to_ras: np.ndarray) -> sitk.Image:
    arr = np.asarray(array)
    if arr.ndim != 3:
        raise InputError(f"Expected a 3D array [k, j, i], got shape {arr.shape}.")
    if arr.dtype == np.float64:
        arr = arr.astype(np.float32)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    image = sitk.GetImageFromArray(np.ascontiguousarray(arr))
    origin, spacing, direction = ijk_to_ras_to_lps_geometry(ijk_to_ras)
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    return image


def _as_3d_scalar(image: sitk.Image, what: str) -> sitk.Image:
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{what} has {image.GetNumberOfComponentsPerPixel()} components per voxel (colour/vector image); "
            "VoxelFM needs a single-channel CT volume."
        )
    dim = image.GetDimension()
    size = image.GetSize()
    if dim == 4 and size[3] == 1:
        image = image[:, :, :, 0]
        dim, size = 3, image.GetSize()
    if dim == 2 or (dim == 3 and size[2] == 1):
        raise InputError(
            f"{what} is a 2D image (size {size}); VoxelFM needs a 3D CT volume. For DICOM, select the folder "
            "holding the whole series rather than a single slice."
        )
    if dim != 3:
        raise InputError(
            f"{what} has {dim} dimensions (size {size}); VoxelFM needs one 3D volume. Extract a single "
            "3D frame/phase first."
        )
    return image


# ---------------------------------------------------------------- reading ----------------------------------
def _extension(path: Path) -> str:
    name = path.name.lower()
    for ext in sorted(READ_EXTENSIONS, key=len, reverse=True):
        if name.endswith(ext):
            return ext
    return path.suffix.lower()


def _check_finite(array: np.ndarray, what: str) -> None:
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        raise InputError(non_finite_message(what, int(np.count_nonzero(~np.isfinite(array)))))


def spacing_warnings(volume: Volume) -> list[str]:
    """Warnings for voxel sizes no CT scanner produces (the image is still used)."""
    spacing = volume.spacing
    lo, hi = PLAUSIBLE_SPACING_MM
    if np.all((spacing >= lo) & (spacing <= hi)):
        return []
    text = " x ".join(f"{s:.4g}" for s in spacing)
    return [
        f"{volume.name or 'The image'} has voxel spacing {text} mm, outside the {lo:g}..{hi:g} mm of CT scans: "
        "the header may be in metres or centimetres, or the spacing was lost (exported as 1 or 0). "
        "Features and volumes will be wrong unless the spacing is fixed."
    ]


def read_volume(
    source,
    ijk_to_ras: np.ndarray | None = None,
    name: str | None = None,
    check_hu: bool = True,
    series: str | None = None,
) -> Volume:
    """Read a CT volume as float32 HU with exact RAS geometry.

    ``source``: a file path (.nii/.nii.gz/.nrrd/.nhdr/.mha/.mhd), a DICOM folder (its CT series; ``series``:
    the SeriesInstanceUID when it holds several), a ``SimpleITK.Image``, or a numpy array [k, j, i] (geometry
    from ``ijk_to_ras``, default identity = 1 mm isotropic, the reference's array path). Raises InputError for
    unusable input (truncated or corrupt files, non-finite voxels); warns (``warnings``) when the values do not
    look like HU (disable with ``check_hu=False``, e.g. for non-CT images) or the spacing is implausible.
    """
    if series is not None and not (isinstance(source, (str, os.PathLike)) and Path(source).is_dir()):
        raise InputError(
            f"--series {series} selects a series of a DICOM folder, but {source} is not a folder."
        )
    if isinstance(source, np.ndarray):
        arr = np.asarray(source)
        if arr.ndim != 3:
            raise InputError(
                f"Expected a 3D array indexed [k, j, i] (slices, rows, columns), got shape {arr.shape}."
            )
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool) or np.iscomplexobj(arr):
            raise InputError(f"Array dtype {arr.dtype} is not a real-valued image type.")
        arr = arr.astype(np.float32, copy=True)
        vol = Volume(arr, np.eye(4) if ijk_to_ras is None else ijk_to_ras, name or "array")
    elif isinstance(source, sitk.Image):
        vol = volume_from_sitk(source, name or "image")
        if ijk_to_ras is not None:
            vol.ijk_to_ras = np.asarray(ijk_to_ras, dtype=np.float64)
    elif isinstance(source, (str, os.PathLike)):
        vol = _read_path(Path(source), name, series)
        if ijk_to_ras is not None:
            raise InputError("ijk_to_ras can only be given with an in-memory array or SimpleITK image.")
    else:
        raise InputError(
            f"Cannot read an image from a {type(source).__name__}; pass a file path, a DICOM folder, a "
            "SimpleITK.Image or a numpy array [k, j, i]."
        )
    _check_finite(vol.array, vol.name or "The image")
    if min(vol.array.shape) < 2:
        raise InputError(
            f"{vol.name or 'The image'} has shape {vol.array.shape} (k, j, i): a 2D slice is not a volume. "
            "VoxelFM needs a 3D CT volume."
        )
    for msg in spacing_warnings(vol) + (hu_warnings(vol.array) if check_hu else []):
        warnings.warn(msg, stacklevel=2)
    return vol


def _read_path(path: Path, name: str | None, series: str | None = None) -> Volume:
    if not path.exists():
        raise InputError(f"Image not found: {path}. Check the path (and that the drive/share is mounted).")
    if path.is_dir():
        image = read_dicom_series(path, series)
        return volume_from_sitk(image, name or path.name)
    ext = _extension(path)
    if ext not in READ_EXTENSIONS and (ext in (".dcm", "") or is_dicom_file(path)):
        raise InputError(
            f"{path.name} is a single DICOM file (one slice); give the folder holding the whole series instead "
            f"({path.parent})."
        )
    if ext not in READ_EXTENSIONS:
        raise InputError(
            f"Unsupported image file type '{ext}' ({path.name}). Use NIfTI (.nii/.nii.gz), NRRD (.nrrd/.nhdr), "
            "MetaImage (.mha/.mhd) or a DICOM series folder."
        )
    check_image_file(path)  # truncation, CRC errors and NIfTI NaNs, which ITK would turn into zeros
    if ext == ".nii" and is_gzip_file(path):  # ITK decides compression by the name, then fails unclearly
        raise InputError(
            f"{path} holds gzip-compressed data but is named {path.name[-4:]}; rename it to "
            f"{path.name[:-4]}.nii.gz and run the command again."
        )
    try:
        reader = sitk.ImageFileReader()
        reader.SetImageIO(_IMAGE_IO[ext])  # by our suffix rule: ITK alone refuses upper-case names (CT.NII)
        reader.SetFileName(str(path))
        image = reader.Execute()
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = first[-1] if first else "unknown error"
        raise InputError(
            f"Could not read {path} as a {ext} image ({detail}). The file may be truncated or not an image; "
            "re-export it."
        ) from exc
    return volume_from_sitk(image, name or path.name[: -len(ext)])


# ---------------------------------------------------------------- writing ----------------------------------
def _atomic_write(image: sitk.Image, path: Path, compress: bool, overwrite: bool) -> Path:
    path = Path(path)
    ext = _extension(path)
    if ext not in WRITE_EXTENSIONS:
        raise InputError(f"Cannot write '{path.name}': use one of {', '.join(WRITE_EXTENSIONS)}.")
    if path.exists() and not overwrite:
        raise InputError(f"{path} already exists; choose another name or allow overwriting.")
    path.parent.mkdir(parents=True, exist_ok=True)
    stem = path.name[: -len(ext)]
    if ext in _DETACHED:
        # Header names its data file: write both under the final names in a temp sub-folder, then move data first.
        tmpdir = Path(tempfile.mkdtemp(prefix=f".{stem}.tmp-", dir=path.parent))
        try:
            sitk.WriteImage(image, str(tmpdir / path.name), compress)
            for f in sorted(tmpdir.iterdir(), key=lambda p: p.name == path.name):
                os.chmod(f, file_mode(path.parent / f.name))
                os.replace(f, path.parent / f.name)
        finally:
            for f in tmpdir.iterdir():
                f.unlink()
            tmpdir.rmdir()
        return path
    return atomic_write(path, lambda tmp: sitk.WriteImage(image, str(tmp), compress), suffix=ext)


def write_volume(
    volume: Volume, path: str | os.PathLike, compress: bool = True, overwrite: bool = True
) -> Path:
    """Write a Volume (dtype kept; float64 stored as float32) atomically; returns the path."""
    return _atomic_write(volume_to_sitk(volume), Path(path), compress, overwrite)


def write_labelmap(
    labels: np.ndarray, ijk_to_ras: np.ndarray, path: str | os.PathLike, overwrite: bool = True
) -> Path:
    """Write an integer label map [k, j, i] (uint8 if it fits, else uint16) atomically, compressed."""
    arr = np.asarray(labels)
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise InputError("Label maps must hold integer labels.")
    if arr.size and (arr.min() < 0 or arr.max() > 65535):
        raise InputError(f"Label values must lie in 0..65535, got {arr.min()}..{arr.max()}.")
    out = arr.astype(np.uint8 if (arr.size == 0 or arr.max() <= 255) else np.uint16)
    return _atomic_write(array_to_sitk(out, ijk_to_ras), Path(path), True, overwrite)
