"""Sentence-level consensus across similar cases, weighted by similarity, and its precedence rules.

No model is needed: the neighbour source is a stand-in returning fixed cases (the NeighbourSource protocol).
"""

from __future__ import annotations

import numpy as np
import pytest

from voxelfm.errors import InputError
from voxelfm.features.service import FeatureService
from voxelfm.imaging.volume import Volume
from voxelfm.report.combine import compose
from voxelfm.report.extract import RuleExtractor
from voxelfm.report.neighbours import (
    ConsensusConfig,
    Neighbour,
    NeighbourSource,
    consensus,
    neighbour_weights,
)
from voxelfm.report.pipeline import ReportPipeline
from voxelfm.report.probe_findings import FindingCall
from voxelfm.report.template_files import load_template

A = Neighbour("case-A", 0.99, "Lungs: Nodule of 5 mm in the right upper lobe.\nHeart: Cardiomegaly.")
B = Neighbour("case-B", 0.98, "Lungs: Nodule of 8 mm in the right upper lobe. No pleural effusion.")
C = Neighbour("case-C", 0.80, "Pleural effusion on the left. Hiatal hernia.")


class FixedCases:
    def __init__(self, cases):
        self.cases, self.asked = cases, []

    def neighbours(self, volume, k):
        self.asked.append(k)
        return self.cases[:k]


def _texts(sentences):
    return [s.text for s in sentences]


def test_weights_follow_the_scores():
    w = neighbour_weights([0.99, 0.98, 0.80], 0.05)
    assert sum(w) == pytest.approx(1.0) and w[0] > w[1] > w[2] and w[2] < 0.05
    assert neighbour_weights([0.99, 0.5], 0.0) == [0.5, 0.5]


def test_consensus_keeps_what_most_of_the_weight_says():
    out = consensus([C, B, A], ConsensusConfig())
    assert _texts(out) == [
        "Nodule of 5 mm in the right upper lobe.",  # A and B agree (numbers masked); the best case's words
        "Cardiomegaly.",  # A alone, but A holds > half of the weight
    ]
    nodule = out[0]
    assert nodule.section == "Lungs" and nodule.finding == "Lung nodule" and nodule.call == "present"
    assert [e["case_id"] for e in nodule.evidence] == ["case-A", "case-B"]
    assert all(e["kind"] == "neighbour" and "score" in e for e in nodule.evidence)
    assert nodule.evidence[1]["sentence"] == "Nodule of 8 mm in the right upper lobe."
    assert sum(e["weight"] for e in nodule.evidence) > 0.95
    equal = consensus([A, B, C], ConsensusConfig(temperature=0.0))
    assert _texts(equal) == ["Nodule of 5 mm in the right upper lobe."]  # 2 of 3 cases; the rest 1 of 3


def test_opposite_statements_never_merge():
    yes = Neighbour("yes", 0.9, "Pleural effusion.")
    no = Neighbour("no", 0.9, "No pleural effusion.")
    out = consensus([yes, no], ConsensusConfig(temperature=0.0, min_support=0.5))
    assert sorted(_texts(out)) == ["No pleural effusion.", "Pleural effusion."]
    assert all(len(s.evidence) == 1 for s in out)
    assert consensus([yes, no], ConsensusConfig(temperature=0.0, min_support=0.6)) == []


def test_sections_come_from_headings_or_content():
    out = consensus([C], ConsensusConfig())
    assert [(s.text, s.section) for s in out] == [
        ("Pleural effusion on the left.", "Lungs"),
        ("Hiatal hernia.", "Gastrointestinal"),
    ]


def test_a_library_without_reports_is_a_clear_error():
    blank = [Neighbour("x", 0.9, ""), Neighbour("y", 0.8, "  ")]
    with pytest.raises(InputError, match="has a report text.*--report REPORT.txt"):
        consensus(blank)


def test_probes_take_precedence_over_similar_cases():
    texts = consensus([A, B], ConsensusConfig())
    calls = [
        FindingCall("Lung nodule", 0.9, "present", "findings"),
        FindingCall("Cardiomegaly", 0.1, "absent", "findings"),
    ]
    out = compose(load_template(), RuleExtractor(), calls, (), texts)
    assert _texts(out.sentences) == [
        "Nodule of 5 mm in the right upper lobe.",  # agrees with the probe: absorbs the probe's sentence
        "No abnormal cardiac or vascular finding.",  # the section's normal sentence: its probe says absent
    ]
    assert out.sentences[1].evidence[0]["finding"] == "Cardiomegaly"
    kinds = [e["kind"] for e in out.sentences[0].evidence]
    assert kinds.count("neighbour") == 2 and kinds.count("probe") == 1
    assert (
        len(out.warnings) == 1 and "Cardiomegaly" in out.warnings[0] and "probe findings" in out.warnings[0]
    )


def test_pipeline_with_a_neighbour_source_only():
    source = FixedCases([A, B, C])
    assert isinstance(source, NeighbourSource)
    pipeline = ReportPipeline(consensus_config=ConsensusConfig(k=2), service=FeatureService())
    draft = pipeline.draft(Volume(np.zeros((2, 2, 2), np.float32)), neighbours=source)
    assert source.asked == [2]
    assert draft.text.splitlines()[1:] == [
        "Lungs: Nodule of 5 mm in the right upper lobe.",
        "Heart: Cardiomegaly.",
    ]
    data = draft.to_dict()
    assert set(data) >= {"text", "sentences"} and all(s["evidence"] for s in data["sentences"])
    assert data["sources"]["neighbours"] == [
        {"case_id": "case-A", "score": 0.99},
        {"case_id": "case-B", "score": 0.98},
    ]
    with pytest.raises(InputError, match="returned no similar cases"):
        pipeline.draft(Volume(np.zeros((2, 2, 2), np.float32)), neighbours=FixedCases([]))


def test_no_consensus_is_reported():
    alike = FixedCases(
        [
            Neighbour("p", 0.9, "Emphysema."),
            Neighbour("q", 0.9, "Cardiomegaly."),
            Neighbour("r", 0.9, "Hiatal hernia."),
        ]
    )
    draft = ReportPipeline(service=FeatureService()).draft(
        Volume(np.zeros((2, 2, 2), np.float32)), neighbours=alike
    )
    assert "reached the support threshold" in draft.warnings[0]
    # the draft's own text says so (not only a warning), naming the closest cases with their scores
    (said,) = draft.sentences
    assert "reached the support threshold" in said.text and "p (similarity 0.900)" in said.text
    assert said.text in draft.text and {e["case_id"] for e in said.evidence} == {"p", "q", "r"}
    assert RuleExtractor().extract(draft.text) == {}  # states no finding
