"""Benchmark-only baseline: SimpleITK rigid then affine intensity registration, then the points mapped through it.

Fixed = target, moving = reference (Mattes mutual information, 3 resolution levels, centred on the images'
centres of mass); the optimised transform maps target points to reference points, so reference points are
mapped with its inverse. Geometry goes through ``voxelfm.imaging.io`` (LPS) and back to RAS.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from voxelfm.imaging.io import volume_to_sitk
from voxelfm.imaging.volume import Volume
from voxelfm.localize.points import lps_to_ras, ras_to_lps

SAMPLES = 50_000  # metric samples per evaluation (random), whatever the image size


def _method(transform: sitk.Transform, iterations: int, voxels: int) -> sitk.ImageRegistrationMethod:
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(min(1.0, SAMPLES / voxels), seed=0)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0, minStep=1e-4, numberOfIterations=iterations, gradientMagnitudeTolerance=1e-8
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([4, 2, 1])
    reg.SetSmoothingSigmasPerLevel([2.0, 1.0, 0.0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(transform, inPlace=True)
    return reg


def register_points(
    reference: Volume, ref_ras: np.ndarray, target: Volume, iterations: int = 200
) -> np.ndarray:
    """Reference points [N,3] (RAS) mapped into the target by rigid + affine registration."""
    fixed = sitk.Cast(volume_to_sitk(target), sitk.sitkFloat32)
    moving = sitk.Cast(volume_to_sitk(reference), sitk.sitkFloat32)
    fixed = sitk.Clamp(fixed, lowerBound=-1000, upperBound=1500)
    moving = sitk.Clamp(moving, lowerBound=-1000, upperBound=1500)
    rigid = sitk.CenteredTransformInitializer(
        fixed, moving, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.MOMENTS
    )
    voxels = int(np.prod(fixed.GetSize()))
    _method(rigid, iterations, voxels).Execute(fixed, moving)
    affine = sitk.AffineTransform(3)
    affine.SetMatrix(rigid.GetMatrix())
    affine.SetTranslation(rigid.GetTranslation())
    affine.SetCenter(rigid.GetCenter())
    _method(affine, iterations, voxels).Execute(fixed, moving)
    inverse = affine.GetInverse()
    lps = ras_to_lps(ref_ras)
    return lps_to_ras(np.array([inverse.TransformPoint(tuple(float(v) for v in p)) for p in lps]))
