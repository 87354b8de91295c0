"""Coarse intensity registration of a reference scan to a target: the starting point of landmark transfer.

WHY: feature matching alone searches the whole target, so between patients a landmark can land on any
look-alike (another vertebra, the other side); a registration gives each point a place to start and a
neighbourhood to search, and tells when that place lies outside the target's field of view. It runs on small
copies (``spacing_mm``, default 6 mm: a torso is ~60^3 voxels) so it takes a second or two, not the ~40 s of a
full-resolution registration. Deterministic: regular metric sampling and one thread, so the same inputs give
the same transform on every run and machine.

Rigid (from the scans as stored and from their centres of mass aligned, the better kept) then affine, Mattes
mutual information, two levels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ..imaging.io import volume_to_sitk
from ..imaging.volume import Volume

CLAMP_HU = (-1000.0, 1500.0)
SEED = 1  # the metric's sample jitter; SimpleITK's seed 0 means "from the wall clock" (not reproducible)


@dataclass(frozen=True)
class RegistrationSettings:
    iterations: int = 80
    histogram_bins: int = 32
    sampling: float = 0.25  # share of the (small) image's voxels the metric uses, on a regular grid


def _image(volume: Volume) -> sitk.Image:
    image = sitk.Cast(volume_to_sitk(volume), sitk.sitkFloat32)
    return sitk.Clamp(image, lowerBound=CLAMP_HU[0], upperBound=CLAMP_HU[1])


def _method(transform: sitk.Transform, settings: RegistrationSettings) -> sitk.ImageRegistrationMethod:
    reg = sitk.ImageRegistrationMethod()
    reg.SetNumberOfThreads(1)  # the metric's sums in one fixed order: the same transform on every run
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=settings.histogram_bins)
    reg.SetMetricSamplingStrategy(reg.REGULAR)
    reg.SetMetricSamplingPercentage(settings.sampling, seed=SEED)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0,
        minStep=1e-3,
        numberOfIterations=settings.iterations,
        gradientMagnitudeTolerance=1e-6,
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([2, 1])
    reg.SetSmoothingSigmasPerLevel([1.0, 0.0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    reg.SetInitialTransform(transform, inPlace=True)
    return reg


def _best_rigid(
    fixed: sitk.Image, moving: sitk.Image, settings: RegistrationSettings
) -> sitk.Euler3DTransform:
    """Rigid registration from two starts, the better end kept (same images and samples, so the metric
    values compare): the scans as stored (a rescan or a crop of the same patient is usually close already) and
    their centres of mass aligned (different fields of view, other scanners)."""
    stored = sitk.Euler3DTransform()
    centre = fixed.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in fixed.GetSize()])
    stored.SetCenter(centre)
    moments = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    best, best_value = None, np.inf
    for start in (stored, moments):
        reg = _method(start, settings)
        try:
            reg.Execute(fixed, moving)
        except RuntimeError:  # this start does not overlap: the other one may
            continue
        if reg.GetMetricValue() < best_value:
            best, best_value = start, reg.GetMetricValue()
    if best is None:
        raise RuntimeError("the scans do not overlap from any start")
    return best


def _extent(volume: Volume) -> float:
    return float(np.prod(np.asarray(volume.shape_ijk) * volume.spacing))


MIN_VOXELS = 8  # per side: below this a scan is too small to register at this spacing


def registration_spacing(volume: Volume, spacing_mm: float) -> float:
    """``spacing_mm``, finer for a thin scan (a 4 cm slab) so that it still has MIN_VOXELS along every axis
    (but never finer than its own voxels)."""
    from .canonical import ras_bounds  # canonical imports torch; registration is SimpleITK only

    lo, hi = ras_bounds(volume)
    thinnest = float(np.min(hi - lo))
    return max(min(spacing_mm, thinnest / MIN_VOXELS), float(np.min(volume.spacing)))


def try_register(
    reference: Volume, target: Volume, settings: RegistrationSettings | None = None
) -> np.ndarray | None:
    """``register``, or None when the images are too small or do not overlap enough to register (the caller
    then goes on without a starting transform)."""
    if min(reference.array.shape) < MIN_VOXELS or min(target.array.shape) < MIN_VOXELS:
        return None
    try:
        matrix = register(reference, target, settings)
    except RuntimeError:  # ITK: "All samples map outside moving image buffer" and the like
        return None
    return matrix if np.all(np.isfinite(matrix)) else None


def register(reference: Volume, target: Volume, settings: RegistrationSettings | None = None) -> np.ndarray:
    """4x4 affine mapping reference RAS to target RAS (give both as small copies, e.g. canonical 6 mm grids).

    The scan covering less is the fixed image, so every metric sample lies inside it (a 4 cm slab against a
    whole abdomen would otherwise be judged on the few samples that happen to fall in the slab). ITK's filters
    (pyramid smoothing, resampling) run on one thread here, so the result is the same to the last bit."""
    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        return _register(reference, target, settings or RegistrationSettings())
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


def _register(reference: Volume, target: Volume, settings: RegistrationSettings) -> np.ndarray:
    swap = _extent(target) > _extent(reference)
    fixed, moving = (_image(reference), _image(target)) if swap else (_image(target), _image(reference))
    rigid = _best_rigid(fixed, moving, settings)
    affine = sitk.AffineTransform(3)
    affine.SetMatrix(rigid.GetMatrix())
    affine.SetTranslation(rigid.GetTranslation())
    affine.SetCenter(rigid.GetCenter())
    _method(affine, settings).Execute(fixed, moving)
    # the optimised transform maps fixed points to moving points (LPS); in RAS, reference -> target
    a = np.array(affine.GetMatrix()).reshape(3, 3)
    c = np.array(affine.GetCenter())
    fixed_to_moving = np.eye(4)
    fixed_to_moving[:3, :3] = a
    fixed_to_moving[:3, 3] = c + np.array(affine.GetTranslation()) - a @ c
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])  # LPS <-> RAS, its own inverse
    ref_to_target = fixed_to_moving if swap else np.linalg.inv(fixed_to_moving)
    return flip @ ref_to_target @ flip


def map_points(matrix: np.ndarray, ras: np.ndarray) -> np.ndarray:
    """RAS points [N,3] through a 4x4 affine."""
    ras = np.asarray(ras, dtype=np.float64).reshape(-1, 3)
    return ras @ matrix[:3, :3].T + matrix[:3, 3]
