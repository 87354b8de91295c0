"""Reference VoxelFM inference preprocessing, reproduced step by step, with the geometry kept as a 4x4.

Order (as in the reference ``extract_features``, after our canonical orientation, ``imaging.canonical``): HU clip -> "looks like HU" check -> optional background crop
(on the loaded grid) -> isotropic resampling -> optional max_patches downsizing -> centre crop to multiples of the
patch size -> normalisation (x - mean) / std. Interpolation is torch trilinear, align_corners=False, float32, with
an explicit output size, exactly as the reference, so prepared arrays match it bit-for-bit.

Deliberate differences from the reference (all documented in ``PreprocessConfig``):
* the clip range is the training range [-1000, 1900] HU for every input type. The reference clips DICOM to
  [-1000, 1000] (NIfTI to [-1000, 1900]), which is inconsistent with training; pass ``clip_hu=(-1000, 1000)`` to
  reproduce its DICOM output exactly.
* numpy arrays are clipped too (the reference's array path does not clip); ``clip_hu=None`` reproduces it.
* a failed "looks like HU" check warns instead of raising; a background crop that keeps nothing falls back
  (see ``voxelfm.imaging.body_crop``) instead of raising.
* the volume is first brought to the canonical (LPS) index order the model was trained on (the reference's
  DICOM path); ``orientation="stored"`` keeps the file's order, as the reference's NIfTI path does.
* spacings equal to within 1e-6 (relative) count as equal, so ulp-level differences from direction cosines do
  not trigger a resampling the reference (reading header values) would not do.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from .body_crop import crop_to_body
from .canonical import ORIENTATIONS, to_canonical
from .hu_checks import hu_warnings
from .resample import patch_grid_to_ras, resize_matrix, shift_matrix
from .volume import Volume

_MAX_PATCH_FACTORS = (0.98, 0.99, 1.00, 1.01, 1.02)
_MAX_PATCH_FALLBACK = 0.95


@dataclass
class PreprocessConfig:
    """Preprocessing parameters (defaults = the published model's training values).

    clip_hu: HU window applied first; (-1000, 1900) is the training range and is used for every input type,
        including DICOM (the reference uses (-1000, 1000) for DICOM only). None = no clipping (the reference's
        behaviour for in-memory arrays; our default clips arrays too).
    mean, std: normalisation after clipping/resampling.
    min_spacing: floor of the isotropic target spacing in mm (target = max(min(spacing), min_spacing)).
    crop_background: crop to the body bounding box before resampling.
    max_patches: if set, shrink the volume so the patch count does not exceed it (reference rule).
    orientation: "canonical" = bring the volume to the patient-aligned LPS index order first (exact permutation
        and flips; an oblique grid is resampled onto the nearest axis-aligned one), so storage order never
        changes what the model sees; "stored" = the file's own array order (the reference's NIfTI path).
        A record written before this option existed (no "orientation" key) was made with the stored order.
    """

    clip_hu: tuple[float, float] | None = (-1000.0, 1900.0)
    mean: float = -573.8
    std: float = 461.3
    min_spacing: float = 0.75
    crop_background: bool = False
    max_patches: int | None = None
    patch_size: int = 14
    orientation: str = "canonical"

    def __post_init__(self) -> None:
        if self.orientation not in ORIENTATIONS:
            raise InputError(
                f"Unknown orientation {self.orientation!r}; use one of {', '.join(ORIENTATIONS)}."
            )

    def to_dict(self) -> dict[str, Any]:
        """The one preprocessing record (JSON types), as features files, caches, probes, runs and libraries
        store it; ``from_dict`` reads it back."""
        d = asdict(self)
        d["clip_hu"] = list(self.clip_hu) if self.clip_hu is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], orientation: str = "stored") -> PreprocessConfig:
        """A recorded preprocessing; ``orientation`` applies when the record names none (records written
        before the option existed were made with the stored order; a model's own defaults pass "canonical")."""
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        known.setdefault("orientation", orientation)
        if known.get("clip_hu") is not None:
            known["clip_hu"] = tuple(float(v) for v in known["clip_hu"])
        return cls(**known)


@dataclass
class PreparedVolume:
    """Model-ready volume: ``array`` [D, H, W] in HU (before normalisation, like the reference's ``img``)."""

    array: np.ndarray
    prepared_to_ras: np.ndarray  # (i, j, k, 1) of ``array`` (i along W) -> RAS
    steps: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    config: PreprocessConfig = field(default_factory=PreprocessConfig)

    def normalized(self) -> torch.Tensor:
        """(array - mean) / std as a float32 CPU tensor [D, H, W] (add batch/channel axes for the model)."""
        t = torch.from_numpy(np.ascontiguousarray(self.array, dtype=np.float32))
        return (t - self.config.mean) / self.config.std

    @property
    def patch_grid_dhw(self) -> tuple[int, int, int]:
        p = self.config.patch_size
        return tuple(int(n) // p for n in self.array.shape)  # type: ignore[return-value]

    @property
    def grid_to_ras(self) -> np.ndarray:
        """Patch-cell centre (i, j, k, 1) -> RAS."""
        return patch_grid_to_ras(self.prepared_to_ras, self.config.patch_size)


def _resize(array: np.ndarray, size_kji: tuple[int, int, int]) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None]
    with torch.inference_mode():
        out = F.interpolate(t, size=tuple(int(s) for s in size_kji), mode="trilinear", align_corners=False)
    return out[0, 0].numpy()


def isotropic_shape(shape_kji, spacing_kji, min_spacing: float) -> tuple[tuple[int, int, int], float] | None:
    """Reference isotropic rule: None if spacings are (all) equal, else (new shape, target spacing)."""
    sp = [float(s) for s in spacing_kji]
    if all(math.isclose(s, sp[0], rel_tol=1e-6, abs_tol=0.0) for s in sp):
        return None
    target = max(min(sp), float(min_spacing))
    new = tuple(max(1, round(int(n) * s / target)) for n, s in zip(shape_kji, sp, strict=True))
    return new, target  # type: ignore[return-value]


def max_patches_shape(shape_kji, max_patches: int, patch_size: int = 14) -> tuple[int, int, int] | None:
    """Reference max_patches rule: None if within budget, else the new shape."""
    count = math.prod(int(n) // patch_size for n in shape_kji)
    if count <= max_patches:
        return None
    s = (max_patches / count) ** (1.0 / 3.0)
    best, best_count = None, -1
    for factor in _MAX_PATCH_FACTORS:
        cand = tuple(int(n * (s * factor)) for n in shape_kji)
        c = math.prod(n // patch_size for n in cand)
        if c <= max_patches and c > best_count:
            best, best_count = cand, c
    if best is None:
        best = tuple(int(n * (s * _MAX_PATCH_FALLBACK)) for n in shape_kji)
    return best  # type: ignore[return-value]


def prepare(volume: Volume, cfg: PreprocessConfig | None = None) -> PreparedVolume:
    """Run the reference preprocessing on ``volume``; keeps prepared_to_ras exact for any direction matrix."""
    cfg = cfg or PreprocessConfig()
    p = cfg.patch_size
    reoriented = "stored"
    if cfg.orientation == "canonical":
        volume, reoriented = to_canonical(volume)
    arr = np.asarray(volume.array, dtype=np.float32)
    if arr.ndim != 3:
        raise InputError(f"Expected a 3D volume [k, j, i], got shape {arr.shape}.")
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
        raise InputError("The volume contains NaN/infinite values; replace them (e.g. by -1000 HU) first.")
    spacing_kji = [float(s) for s in volume.spacing[::-1]]
    to_ras = np.asarray(volume.ijk_to_ras, dtype=np.float64).copy()
    steps: dict[str, Any] = {
        "orientation": reoriented,  # stored | none | permuted | resampled (imaging.canonical)
        "loaded_shape": list(arr.shape),
        "spacing_zyx": spacing_kji,
    }
    notes: list[str] = []

    if cfg.clip_hu is not None:
        arr = np.clip(arr, np.float32(cfg.clip_hu[0]), np.float32(cfg.clip_hu[1]))
        steps["clip_hu"] = list(cfg.clip_hu)
    notes += hu_warnings(arr, clipped=cfg.clip_hu is not None)

    if cfg.crop_background:
        crop = crop_to_body(arr)
        arr = np.ascontiguousarray(crop.apply(arr))
        to_ras = to_ras @ shift_matrix(crop.offset_kji)
        steps["after_crop_background_shape"] = list(arr.shape)
        steps["crop_background_offset_zyx"] = list(crop.offset_kji)
        steps["crop_background_rule"] = crop.rule
        if crop.warning:
            notes.append(crop.warning)

    iso = isotropic_shape(arr.shape, spacing_kji, cfg.min_spacing)
    if iso is not None:
        new_shape, target = iso
        to_ras = to_ras @ resize_matrix(arr.shape, new_shape)
        arr = _resize(arr, new_shape)
        steps["after_resize_isotropic_shape"] = list(arr.shape)
        steps["isotropic_spacing_mm"] = target

    if cfg.max_patches:
        mp = max_patches_shape(arr.shape, int(cfg.max_patches), p)
        if mp is not None:
            if min(mp) < 1:
                raise InputError(f"max_patches={cfg.max_patches} is too small for this volume.")
            to_ras = to_ras @ resize_matrix(arr.shape, mp)
            arr = _resize(arr, mp)
            steps["after_resize_max_patches_shape"] = list(arr.shape)

    if min(arr.shape) < p:
        sp = np.linalg.norm(to_ras[:3, :3], axis=0)[::-1]
        raise InputError(
            f"After resampling the volume is {list(arr.shape)} voxels (z, y, x) of about "
            f"{np.round(sp, 3).tolist()} mm; every axis needs at least {p} voxels. The image is too small "
            "(or max_patches too low) for the model."
        )
    rem = [n % p for n in arr.shape]
    start = [r // 2 for r in rem]
    arr = arr[tuple(slice(s, n - r + s) for s, n, r in zip(start, arr.shape, rem, strict=True))]
    to_ras = to_ras @ shift_matrix(start)
    steps["after_patch_crop_shape"] = list(arr.shape)
    steps["patch_crop_offset_zyx"] = start
    steps["patch_grid_dhw"] = [n // p for n in arr.shape]

    for msg in notes:
        warnings.warn(msg, stacklevel=2)
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if np.shares_memory(arr, volume.array):  # never alias the caller's voxels
        arr = arr.copy()
    return PreparedVolume(arr, to_ras, steps, notes, cfg)
