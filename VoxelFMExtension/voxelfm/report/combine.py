"""Sentences from every source -> the draft's sentences, section by section in template order.

Precedence, so the draft never says two contradicting things: a probe's call on a finding is kept; a sentence
from similar cases (or the VLM) stating the same finding the same way absorbs the probe's evidence (and
replaces the probe's plainer sentence); one stating it differently is dropped with a warning. Within a section:
probe sentences, then measurements (an empty segment is stated as empty), then text-source sentences; a section left empty whose probes all said
absent gets the template's "normal" sentence, with those probes as its evidence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .catalog import normalise_name
from .draft import Sentence, measurement_evidence, probe_evidence
from .extract import FindingsExtractor
from .measurements import SegmentMeasurement
from .probe_findings import FindingCall
from .template import ReportTemplate


@dataclass
class Composed:
    sentences: list[Sentence]
    warnings: list[str] = field(default_factory=list)


def probe_sentence(call: FindingCall, template: ReportTemplate) -> Sentence | None:
    if call.call == "absent" and not template.include_absent:
        return None
    return Sentence(
        template.finding_sentence(call.finding, call.call, call.probability),
        template.section_for_finding(call.finding),
        [probe_evidence(call.probe, call.finding, call.probability, call.call)],
        call.finding,
        call.call,
    )


def measurement_sentence(m: SegmentMeasurement, template: ReportTemplate) -> Sentence:
    """The segment's measurements; an empty segment is stated as empty (with its zero volume as evidence)
    rather than left out, so the draft says what it was given."""
    sid, src = m.segment_id, m.source
    if m.voxels == 0:
        evidence = [measurement_evidence(m.name, "volume", 0.0, "mL", sid, src)]
        return Sentence(
            template.empty_segment_sentence(m.name), template.section_for_segment(m.name), evidence
        )
    r, a, s = m.centroid_ras
    text = template.measurement_sentence(
        segment=m.name, volume_ml=m.volume_ml, diameter_mm=m.diameter_mm, r=r, a=a, s=s, voxels=m.voxels
    )
    evidence = [
        measurement_evidence(m.name, "volume", m.volume_ml, "mL", sid, src),
        measurement_evidence(m.name, "largest_diameter", m.diameter_mm, "mm", sid, src),
        measurement_evidence(m.name, "centroid", [r, a, s], "mm (RAS)", sid, src),
    ]
    return Sentence(text, template.section_for_segment(m.name), evidence)


def _reconcile(
    texts: list[Sentence], calls: dict[str, FindingCall], extractor: FindingsExtractor, warnings: list[str]
) -> tuple[list[Sentence], set[str]]:
    """Text-source sentences that agree with the probes (with the probes' evidence), and the findings covered."""
    kept, covered = [], set()
    for sentence in texts:
        labels = {normalise_name(f): c for f, c in extractor.extract(sentence.text).items()}
        judged = {f: c for f, c in labels.items() if f in calls}
        clash = [f for f, c in judged.items() if calls[f].call != c]
        if clash:
            call = calls[clash[0]]
            warnings.append(
                f"Dropped '{sentence.text}' (from {sentence.evidence[0].get('kind', 'a source')}): probe "
                f"{call.probe} calls {call.finding} {call.call} (probability {call.probability:.2f})."
            )
            continue
        for f in judged:
            c = calls[f]
            sentence.evidence.append(probe_evidence(c.probe, c.finding, c.probability, c.call))
            covered.add(f)
        kept.append(sentence)
    return kept, covered


def _normal(section: str, calls: Sequence[FindingCall], template: ReportTemplate) -> Sentence | None:
    mine = [c for c in calls if template.section_for_finding(c.finding) == section]
    text = template.section(section).normal
    if not text or not mine or any(c.call != "absent" for c in mine):
        return None
    return Sentence(text, section, [probe_evidence(c.probe, c.finding, c.probability, c.call) for c in mine])


def unique_calls(calls: Sequence[FindingCall], warnings: list[str]) -> dict[str, FindingCall]:
    """One call per finding (the first probe's; a second probe of the same finding is reported)."""
    out: dict[str, FindingCall] = {}
    for c in calls:
        key = normalise_name(c.finding)
        if key in out:
            warnings.append(
                f"Probes {out[key].probe} and {c.probe} both call {c.finding}; {out[key].probe} is used."
            )
            continue
        out[key] = c
    return out


def compose(
    template: ReportTemplate,
    extractor: FindingsExtractor,
    calls: Sequence[FindingCall] = (),
    measurements: Sequence[SegmentMeasurement] = (),
    texts: Sequence[Sentence] = (),
) -> Composed:
    warnings: list[str] = []
    by_finding = unique_calls(calls, warnings)
    text_sentences, covered = _reconcile(list(texts), by_finding, extractor, warnings)
    probe_sentences = [
        s for key, c in by_finding.items() if key not in covered and (s := probe_sentence(c, template))
    ]
    measured = [measurement_sentence(m, template) for m in measurements]
    out: list[Sentence] = []
    for section in template.section_names:
        mine = [s for s in (*probe_sentences, *measured, *text_sentences) if s.section == section]
        if not mine and (normal := _normal(section, list(by_finding.values()), template)):
            mine = [normal]
        out += mine
    placed = set(template.section_names)
    for s in (*probe_sentences, *measured, *text_sentences):  # a section the template lacks: the last one
        if s.section not in placed:
            s.section = template.section_names[-1]
            out.append(s)
    return Composed(out, warnings)
