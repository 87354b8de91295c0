"""Find and read the CT series in a DICOM folder with SimpleITK/GDCM.

Why our own series selection: a study folder often holds several series (scouts, dose reports, other
reconstructions). Non-CT series and localizers (CT series of at most ``LOCALIZER_SLICES`` images) are skipped;
when more than one CT volume remains, guessing (the reference keeps the largest) could silently analyse the
wrong reconstruction, so the error lists them and the caller names one (``--series UID``). Slices are sorted
along the true slice normal (ImageOrientationPatient cross product), so oblique and feet-first series stack
correctly, and the full 3D geometry is kept instead of only the z spacing.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from .formats import list_images

_MODALITY = "0008|0060"
_IPP = "0020|0032"
_IOP = "0020|0037"
_DESCRIPTION = "0008|103e"
LOCALIZER_SLICES = 3  # scouts/localizers: one to three images, never the volume meant


@dataclass
class SeriesInfo:
    folder: str
    series_id: str
    files: list[str]
    modality: str
    description: str = ""


def _header(path: str) -> sitk.ImageFileReader | None:
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.LoadPrivateTagsOff()
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    return reader


def _tag(reader: sitk.ImageFileReader, key: str) -> str:
    return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else ""


def _floats(text: str) -> list[float] | None:
    try:
        return [float(v) for v in text.replace(",", "\\").split("\\") if v.strip()]
    except ValueError:
        return None


def find_series(folder: str | Path) -> list[SeriesInfo]:
    """All DICOM series below ``folder`` (the folder itself first, then sub-folders)."""
    found: list[SeriesInfo] = []
    for root, dirs, _files in os.walk(str(folder)):
        dirs.sort()
        shown = sitk.ProcessObject.GetGlobalWarningDisplay()
        sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK prints "No Series were found" to the terminal
        try:
            ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(root)
        except RuntimeError:
            ids = ()
        finally:
            sitk.ProcessObject.SetGlobalWarningDisplay(shown)
        for sid in ids:
            files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(root, sid))
            if not files:
                continue
            head = _header(files[0])
            modality = _tag(head, _MODALITY).upper() if head is not None else ""
            description = _tag(head, _DESCRIPTION) if head is not None else ""
            found.append(SeriesInfo(root, sid, files, modality, description))
    return found


def choose_ct_series(series: list[SeriesInfo], folder: str | Path, uid: str | None = None) -> SeriesInfo:
    """The series ``uid``, else the one CT volume (CT or unset modality, as in some anonymised exports)."""
    if not series:
        images = list_images(folder, recursive=False, dicom=False)
        if images:
            names = ", ".join(p.name for p in images[:3]) + (
                f", ... ({len(images)} in all)" if len(images) > 3 else ""
            )
            raise InputError(
                f"{folder} is a folder of image files ({names}), not a DICOM series; give one of the files."
            )
        raise InputError(
            f"No DICOM series found in folder {folder}. Select the folder that contains the CT slice files "
            "(or a parent of it), or load a NIfTI/NRRD file instead."
        )
    if uid:
        match = [s for s in series if s.series_id == uid.strip()]
        if not match:
            raise InputError(f"The DICOM folder {folder} has no series {uid}. {_listing(series)}")
        return max(match, key=lambda s: len(s.files))
    ct = [s for s in series if s.modality in ("CT", "")]
    if not ct:
        mods = sorted({s.modality for s in series})
        raise InputError(
            f"The DICOM folder {folder} holds no CT series (modalities found: {', '.join(mods)}). "
            "VoxelFM works on CT only; select a CT series."
        )
    volumes = [s for s in ct if len(s.files) > LOCALIZER_SLICES] or ct
    if len(volumes) > 1:
        raise InputError(
            f"The DICOM folder {folder} holds {len(volumes)} CT series; say which one to use with --series UID "
            f"(or select a folder holding only that series). {_listing(volumes)}"
        )
    return volumes[0]


def _listing(series: list[SeriesInfo]) -> str:
    rows = [
        f"  {s.series_id or '(no SeriesInstanceUID: select its folder)'}  {s.modality or '?'}, {len(s.files)} images"
        + (f", {s.description!r}" if s.description else "")
        + f"  ({s.folder})"
        for s in series
    ]
    return "Series found:\n" + "\n".join(rows)


def _sort_along_normal(files: list[str]) -> tuple[list[str], np.ndarray | None]:
    """Sort files by ImagePositionPatient projected on the slice normal; returns (files, sorted positions)."""
    keyed = []
    normal = None
    for f in files:
        head = _header(f)
        if head is None:
            return files, None
        ipp = _floats(_tag(head, _IPP))
        iop = _floats(_tag(head, _IOP))
        if ipp is None or len(ipp) != 3 or iop is None or len(iop) != 6:
            return files, None
        if normal is None:
            normal = np.cross(np.asarray(iop[:3]), np.asarray(iop[3:]))
        keyed.append((float(np.dot(normal, ipp)), f))
    keyed.sort(key=lambda t: t[0])
    return [f for _, f in keyed], np.array([p for p, _ in keyed])


def read_dicom_series(folder: str | Path, series: str | None = None) -> sitk.Image:
    """Read the CT series below ``folder`` (``series``: its SeriesInstanceUID, needed when there are several)
    as one 3D SimpleITK image (rescale applied by GDCM)."""
    info = choose_ct_series(find_series(folder), folder, series)
    files, positions = _sort_along_normal(info.files)
    if positions is not None and len(positions) > 2:
        steps = np.diff(positions)
        if np.any(np.abs(steps) < 1e-6):
            warnings.warn(
                f"DICOM series in {info.folder} has slices at duplicate positions; the volume geometry may be "
                "wrong. Check that the folder holds a single acquisition.",
                stacklevel=3,
            )
        elif np.ptp(steps) > 0.01 * abs(float(np.mean(steps))) + 1e-3:
            warnings.warn(
                f"DICOM series in {info.folder} has non-uniform slice spacing ({steps.min():.3f}.."
                f"{steps.max():.3f} mm); a constant spacing is assumed, so positions can be off.",
                stacklevel=3,
            )
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        return reader.Execute()
    except RuntimeError as exc:
        raise InputError(
            f"Could not read the DICOM series in {info.folder} ({len(files)} files): {exc}. "
            "Check that the files are complete, uncompressed or in a codec GDCM supports."
        ) from exc
