"""The one result of report drafting: sentences, each in a section and carrying its evidence.

Evidence items are plain JSON-ready dicts with a ``kind``:
  {"kind": "probe", "probe": name, "finding": name, "probability": p, "call": present|absent|uncertain}
  {"kind": "measurement", "segment": name, "segment_id": id, "segmentation": node id or file,
   "quantity": volume|largest_diameter|centroid, "value": number or [r, a, s], "unit": "mL" | "mm" | "mm (RAS)"}
  {"kind": "neighbour", "case_id": id, "score": similarity, "weight": share of the neighbours' weight,
   "sentence": the neighbour's own sentence, "image": the case's image path when the library knows it}
  {"kind": "vlm", "run": folder, "model": LM name}
``ReportDraft.to_dict()`` is the JSON that `voxelfm report --json` prints and the Slicer module saves.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .sections import strip_heading

EVIDENCE_KINDS = ("probe", "measurement", "neighbour", "vlm")
DRAFT_FORMAT_VERSION = 1


def probe_evidence(probe: str, finding: str, probability: float, call: str) -> dict[str, Any]:
    return {
        "kind": "probe",
        "probe": probe,
        "finding": finding,
        "probability": float(probability),
        "call": call,
    }


def measurement_evidence(
    segment: str, quantity: str, value: float | list[float], unit: str, segment_id: str = "", source: str = ""
) -> dict[str, Any]:
    item = {"kind": "measurement", "segment": segment, "quantity": quantity, "value": value, "unit": unit}
    if segment_id:
        item["segment_id"] = segment_id
    if source:
        item["segmentation"] = source
    return item


def neighbour_evidence(
    case_id: str, score: float, weight: float, sentence: str, image: str = ""
) -> dict[str, Any]:
    item = {
        "kind": "neighbour",
        "case_id": str(case_id),
        "score": float(score),
        "weight": float(weight),
        "sentence": sentence,
    }
    if image:
        item["image"] = image
    return item


@dataclass
class Sentence:
    text: str
    section: str
    evidence: list[dict[str, Any]] = field(default_factory=list)
    finding: str | None = None  # the catalogue finding it states, when it states one
    call: str | None = None  # present | absent | uncertain, for a finding sentence

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"text": self.text, "section": self.section, "evidence": list(self.evidence)}
        if self.finding:
            out["finding"], out["call"] = self.finding, self.call
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sentence:
        return cls(d["text"], d["section"], list(d.get("evidence") or []), d.get("finding"), d.get("call"))

    def kinds(self) -> set[str]:
        return {e.get("kind") for e in self.evidence}


@dataclass
class ReportDraft:
    sentences: list[Sentence]
    sections: list[str]  # the template's sections, in order
    title: str = ""
    heading: str = "{section}:"
    template: str = ""
    sources: dict[str, Any] = field(default_factory=dict)  # what was used: probes, segmentation, neighbours
    warnings: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        """Title, then each section with sentences as ``Heading text text``; empty sections are left out. A
        sentence starting with its own section's name ("Liver: volume ...") reads without it under that
        heading, so no heading is repeated."""
        lines = [self.title] if self.title else []
        for section in self.sections:
            body = " ".join(strip_heading(s.text, section) for s in self.sentences if s.section == section)
            if body:
                lines.append(f"{self.heading.format(section=section)} {body}".strip())
        return "\n".join(lines) + ("\n" if lines else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": DRAFT_FORMAT_VERSION,
            "text": self.text,
            "sentences": [s.to_dict() for s in self.sentences],
            "sections": list(self.sections),
            "title": self.title,
            "heading": self.heading,
            "template": self.template,
            "sources": self.sources,
            "warnings": list(self.warnings),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReportDraft:
        return cls(
            [Sentence.from_dict(s) for s in d.get("sentences") or []],
            list(d.get("sections") or []),
            title=d.get("title", ""),
            heading=d.get("heading", "{section}:"),
            template=d.get("template", ""),
            sources=dict(d.get("sources") or {}),
            warnings=list(d.get("warnings") or []),
        )
