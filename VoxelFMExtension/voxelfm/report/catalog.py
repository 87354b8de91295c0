"""The 18 CT-RATE abnormalities and the eight report sections of the reference's rewritten reports.

WHY one table: the draft (which section a finding's sentence goes to, how it reads) and the evaluation (which
findings are scored) must agree on the same names. Probe targets and template entries are matched to these
names after normalisation (case, spaces, underscores), so ``lung_nodule`` and ``Lung nodule`` are the same.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SECTIONS = ("Lungs", "Heart", "Gastrointestinal", "Liver", "Spleen", "Kidneys", "Bones", "Other")


@dataclass(frozen=True)
class Finding:
    name: str  # as in CT-RATE's multi-abnormality labels
    section: str  # the report section its sentence goes to
    phrase: str  # how a sentence names it ("No {phrase}.")


FINDINGS: tuple[Finding, ...] = (
    Finding("Medical material", "Other", "medical material"),
    Finding("Arterial wall calcification", "Heart", "arterial wall calcification"),
    Finding("Cardiomegaly", "Heart", "cardiomegaly"),
    Finding("Pericardial effusion", "Heart", "pericardial effusion"),
    Finding("Coronary artery wall calcification", "Heart", "coronary artery wall calcification"),
    Finding("Hiatal hernia", "Gastrointestinal", "hiatal hernia"),
    Finding("Lymphadenopathy", "Other", "lymphadenopathy"),
    Finding("Emphysema", "Lungs", "emphysema"),
    Finding("Atelectasis", "Lungs", "atelectasis"),
    Finding("Lung nodule", "Lungs", "lung nodule"),
    Finding("Lung opacity", "Lungs", "lung opacity"),
    Finding("Pulmonary fibrotic sequela", "Lungs", "pulmonary fibrotic sequela"),
    Finding("Pleural effusion", "Lungs", "pleural effusion"),
    Finding("Mosaic attenuation pattern", "Lungs", "mosaic attenuation pattern"),
    Finding("Peribronchial thickening", "Lungs", "peribronchial thickening"),
    Finding("Consolidation", "Lungs", "consolidation"),
    Finding("Bronchiectasis", "Lungs", "bronchiectasis"),
    Finding("Interlobular septal thickening", "Lungs", "interlobular septal thickening"),
)

FINDING_NAMES: tuple[str, ...] = tuple(f.name for f in FINDINGS)


def normalise_name(name: str) -> str:
    """'Lung_nodule', 'lung nodule ', 'LUNG-NODULE' -> 'lung nodule'."""
    return re.sub(r"[\s_\-]+", " ", str(name)).strip().lower()


_BY_KEY = {normalise_name(f.name): f for f in FINDINGS}


def find_finding(name: str) -> Finding | None:
    """The catalogue entry a probe target or template entry names, or None for a finding of the user's own."""
    return _BY_KEY.get(normalise_name(name))


def finding_for(name: str, section: str = "Other") -> Finding:
    """The catalogue entry, or an ad-hoc one (its own name as phrase, in ``section``) for other names."""
    known = find_finding(name)
    return known or Finding(str(name), section, normalise_name(name))
