"""A small case library of the real CTs in ../shared/data, with reports and findings written from what is
known of each case (shared/data/README.md: masses and tumours, labelled organs), for the report tests and the
report benchmark. The reports are short abnormal-findings sections like the reference's rewritten reports;
where nothing abnormal is known, they state only what the data set says (organs delineated, no lesion named).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SPACING_MM = 5.0  # every case is resampled to this isotropic grid: a tiny backbone reads it in a second


@dataclass(frozen=True)
class LibraryCase:
    case_id: str
    image: str  # relative to shared/data
    report: str
    findings: dict[str, int] = field(default_factory=dict)  # CT-RATE names -> 1 (others 0)


CASES = (
    LibraryCase(
        "lung_pet_ct_dx_a0002",
        "public_ct/lung_pet_ct_dx_a0002.nii.gz",
        "Lungs: A mass in the right lower lobe.\nOther: No lymphadenopathy.",
        {"Lung nodule": 1},
    ),
    LibraryCase(
        "popi_phase00",
        "public_ct/popi_phase00_chest.nii.gz",
        "Lungs: A tumour in the right lung. No pleural effusion.",
        {"Lung nodule": 1},
    ),
    LibraryCase(
        "lidc_idri_0314",
        "public_ct/lidc_idri_0314_chest.nii.gz",
        "Lungs: Pulmonary nodule.",
        {"Lung nodule": 1},
    ),
    LibraryCase(
        "totalseg_abdomen",
        "totalseg/abdomen_3mm/ct.nii.gz",
        "Liver: The liver is delineated, of normal size.\nSpleen: The spleen is delineated.\n"
        "Kidneys: Both kidneys are delineated.",
    ),
    LibraryCase(
        "totalseg_chest",
        "totalseg/chest_dicom/dicom",
        "Heart: The heart and the aorta are delineated. No pericardial effusion.",
    ),
    LibraryCase(
        "totalseg_pulmonary",
        "totalseg/pulmonary_1p5mm/ct.nii.gz",
        "Heart: The pulmonary artery is delineated, of normal calibre.",
    ),
    LibraryCase(
        "elastix_thorax",
        "public_ct/elastix_lung_small/3DCT_lung_baseline_small.mha",
        "Lungs: Both lungs are delineated. No consolidation.",
    ),
)


def load_case(data_dir: Path, case: LibraryCase, spacing_mm: float = SPACING_MM):
    """The case's CT resampled to ``spacing_mm`` isotropic (finer for a thin slab: 16 voxels on every axis)."""
    from voxelfm.imaging.io import read_volume
    from voxelfm.imaging.resample import resample_isotropic
    from voxelfm.imaging.volume import Volume

    original = read_volume(str(data_dir / case.image))
    extent = np.asarray(original.array.shape[::-1]) * original.spacing
    volume = resample_isotropic(original, min(spacing_mm, float(extent.min()) / 16))
    return Volume(volume.array.astype(np.float32), volume.ijk_to_ras, case.case_id)


def altered(volume, seed: int):
    """Another acquisition of the same patient, roughly: noise, a small HU scale change, one border slab cut."""
    from voxelfm.imaging.volume import Volume

    rng = np.random.default_rng(seed)
    arr = volume.array * 1.02 + rng.normal(0.0, 15.0, volume.array.shape)
    return Volume(arr[:, :, 1:].astype(np.float32), volume.ijk_to_ras @ _i_offset(), volume.name + "_altered")


def _i_offset() -> np.ndarray:
    m = np.eye(4)
    m[0, 3] = 1.0  # array column 0 of the cut volume is column 1 of the original
    return m
