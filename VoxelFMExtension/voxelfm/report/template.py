"""Report templates: which sections, in which order, and how each kind of sentence reads.

A template is a small YAML (or JSON) file; Resources/report_templates/chest_ct.yaml is the default and
documents the format. ``template_files.load_template`` reads and checks one; this module is the template
itself (placing findings and segments in sections, rendering sentences).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

from .catalog import find_finding, finding_for, normalise_name
from .sections import section_of_text

# Fields each sentence kind may use, with sample values used to check format specs at load time.
FINDING_FIELDS = {
    "finding": "Lung nodule",
    "phrase": "lung nodule",
    "Phrase": "Lung nodule",
    "probability": 0.5,
    "percent": 50.0,
}
MEASUREMENT_FIELDS = {
    "segment": "liver",
    "volume_ml": 1.0,
    "diameter_mm": 1.0,
    "r": 0.0,
    "a": 0.0,
    "s": 0.0,
    "voxels": 1,
}
SENTENCE_FIELDS = {
    "present": FINDING_FIELDS,
    "uncertain": FINDING_FIELDS,
    "absent": FINDING_FIELDS,
    "measurement": MEASUREMENT_FIELDS,
    "empty_segment": {"segment": "liver"},
}
HEADING_FIELDS = {"section": "Lungs"}
DEFAULT_SENTENCES = {
    "present": "{Phrase} (probability {probability:.2f}).",
    "uncertain": "Possible {phrase} (probability {probability:.2f}).",
    "absent": "No {phrase}.",
    "measurement": "{segment}: volume {volume_ml:.1f} mL, largest diameter {diameter_mm:.1f} mm, "
    "centroid R {r:.1f}, A {a:.1f}, S {s:.1f} mm.",
    "empty_segment": "{segment}: the segment is empty (no voxels), so nothing was measured.",
}


@dataclass(frozen=True)
class Thresholds:
    """Probe probability -> call: >= present: present; < absent: absent; otherwise uncertain."""

    present: float = 0.6
    absent: float = 0.4

    def call(self, probability: float) -> str:
        if probability >= self.present:
            return "present"
        return "absent" if probability < self.absent else "uncertain"


@dataclass(frozen=True)
class TemplateSection:
    name: str
    findings: tuple[str, ...] = ()  # normalised finding names placed here
    segments: tuple[str, ...] = ()  # fnmatch patterns (lower case)
    normal: str = ""


@dataclass(frozen=True)
class ReportTemplate:
    name: str
    sections: tuple[TemplateSection, ...]
    title: str = ""
    heading: str = "{section}:"
    include_absent: bool = False
    thresholds: Thresholds = field(default_factory=Thresholds)
    sentences: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_SENTENCES))
    source: str = ""  # the file it was read from

    @property
    def section_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.sections)

    def section(self, name: str) -> TemplateSection:
        return next(s for s in self.sections if s.name == name)

    def _placed(self, name: str) -> str:
        return name if name in self.section_names else self.sections[-1].name

    def section_for_finding(self, finding: str) -> str:
        key = normalise_name(finding)
        for s in self.sections:
            if key in s.findings:
                return s.name
        known = find_finding(finding)
        return self._placed(known.section if known else self.sections[-1].name)

    def section_for_segment(self, segment: str) -> str:
        low = segment.strip().lower()
        for s in self.sections:
            if any(fnmatch.fnmatchcase(low, p) for p in s.segments):
                return s.name
        return section_of_text(low.replace("_", " "), (), self.section_names)

    def finding_sentence(self, finding: str, call: str, probability: float) -> str:
        f = finding_for(finding)
        values = {
            "finding": f.name,
            "phrase": f.phrase,
            "Phrase": f.phrase[:1].upper() + f.phrase[1:],
            "probability": float(probability),
            "percent": 100.0 * float(probability),
        }
        return self.sentences[call].format(**values)

    def measurement_sentence(self, **values: Any) -> str:
        return self.sentences["measurement"].format(**values)

    def empty_segment_sentence(self, segment: str) -> str:
        return self.sentences["empty_segment"].format(segment=segment)
