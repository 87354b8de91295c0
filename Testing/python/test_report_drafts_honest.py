"""A draft always says something true: no support, empty segments and no source are stated in its text; no
heading is repeated; huge neighbour reports are read only up to a bound; a segmentation of another scan is
refused (no model needed: measurements and neighbour doubles only)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from report_cases import planted_ct

from voxelfm.cli.main import main
from voxelfm.features.service import FeatureService
from voxelfm.imaging.io import write_labelmap, write_volume
from voxelfm.imaging.volume import Volume
from voxelfm.report.extract import RuleExtractor
from voxelfm.report.measurements import SegmentMeasurement
from voxelfm.report.neighbours import ConsensusConfig, Neighbour
from voxelfm.report.pipeline import ReportPipeline
from voxelfm.report.segmentation_files import SegmentationData, SegmentRef

VOLUME = Volume(np.zeros((4, 4, 4), np.float32), np.eye(4), "ct")


def _draft(**sources):
    return ReportPipeline(service=FeatureService(), consensus_config=sources.pop("config", None)).draft(
        VOLUME, **sources
    )


def _body(draft) -> str:
    """The draft's text without its title line."""
    return draft.text.split("\n", 1)[1] if draft.template else draft.text


def test_empty_segment_is_stated_not_skipped():
    arr = np.zeros((4, 4, 4), np.int32)
    arr[1:3, 1:3, 1:3] = 1
    seg = SegmentationData(
        [Volume(arr, np.eye(4))],
        [SegmentRef("liver", "Segment_1", 0, 1), SegmentRef("spleen", "Segment_2", 0, 2)],
        "seg.seg.nrrd",
    )
    draft = _draft(segmentation=seg)
    (empty,) = [s for s in draft.sentences if s.evidence[0]["segment"] == "spleen"]
    assert "spleen: the segment is empty" in empty.text and empty.section == "Spleen"
    assert "\nSpleen: The segment is empty (no voxels)" in draft.text
    assert empty.evidence == [
        {
            "kind": "measurement",
            "segment": "spleen",
            "quantity": "volume",
            "value": 0.0,
            "unit": "mL",
            "segment_id": "Segment_2",
            "segmentation": "seg.seg.nrrd",
        }
    ]
    only_empty = _draft(segmentation=[SegmentMeasurement("heart", 0, 0.0, 0.0, (np.nan,) * 3)])
    assert _body(only_empty).startswith("Heart: The segment is empty") and "empty" in _body(only_empty)


def test_no_support_names_the_closest_cases_in_the_text():
    cases = [
        Neighbour("a", 0.95, "Emphysema."),
        Neighbour("b", 0.95, "Cardiomegaly."),
        Neighbour("c", 0.95, "Hiatal hernia."),
        Neighbour("d", 0.2, ""),
    ]
    draft = _draft(neighbours=cases)
    body = _body(draft)
    assert "support threshold" in body and "a (similarity 0.950)" in body and "b (similarity 0.950)" in body
    assert all(s["evidence"] for s in draft.to_dict()["sentences"])  # the JSON contract holds
    # a supported sentence is drafted as before, and then the no-support sentence is not added
    agreeing = [Neighbour("a", 0.95, "Emphysema."), Neighbour("b", 0.94, "Emphysema.")]
    assert _body(_draft(neighbours=agreeing)) == "Lungs: Emphysema.\n"


def test_nothing_to_state_is_said():
    from voxelfm.report.probe_findings import FindingCall
    from voxelfm.report.unsupported import nothing_to_state

    calls = [FindingCall("Emphysema", 0.1, "absent", "p")]
    said = nothing_to_state(calls, None, "Other")
    assert "called all 1 findings absent" in said.text and said.evidence[0]["kind"] == "probe"


def test_no_heading_is_repeated():
    reports = "Findings: Lungs: No nodules.\nLiver: Liver: normal.\n"
    cases = [
        Neighbour("a", 0.9, reports),
        Neighbour("b", 0.9, "FINDINGS:\nLUNGS: No nodules.\nLiver: normal."),
    ]
    draft = _draft(neighbours=cases, segmentation=[SegmentMeasurement("Liver", 8, 1.0, 2.0, (0.0, 0.0, 0.0))])
    lines = _body(draft).splitlines()
    assert lines[0] == "Lungs: No nodules."
    assert lines[1].startswith("Liver: Volume 1.0 mL") and lines[1].endswith("Normal.")
    for line in lines:
        assert not re.search(r"\b(\w+):.*\b\1:", line, re.IGNORECASE), line
        assert "findings:" not in line.lower()
    # the JSON sentence keeps the segment's name (it stands alone there)
    assert any(s.text.startswith("Liver: volume") for s in draft.sentences)


def test_huge_neighbour_report_is_read_up_to_a_bound():
    filler = "Lungs: The lungs are clear.\n" * 2000  # 56 000 characters
    cases = [
        Neighbour("big", 0.9, filler + "Emphysema.\n"),
        Neighbour("b", 0.9, "Lungs: The lungs are clear."),
    ]
    draft = _draft(neighbours=cases, config=ConsensusConfig(max_report_chars=20_000))
    assert any("big has 56011 characters" in w for w in draft.warnings)
    assert "Emphysema" not in draft.text and RuleExtractor().extract(draft.text) == {}
    assert _body(draft) == "Lungs: The lungs are clear.\n"


@pytest.fixture(scope="module")
def ct_and_labels(tmp_path_factory):
    root = tmp_path_factory.mktemp("report_overlap")
    volume = planted_ct(True, False, seed=301)
    image = write_volume(volume, root / "chest.nii.gz")
    labels = np.zeros(volume.array.shape, np.uint8)
    labels[10:19, 10:19, 10:19] = 1
    inside = write_labelmap(labels, volume.ijk_to_ras, root / "inside_seg.nii.gz")
    far = volume.ijk_to_ras.copy()
    far[:3, 3] += [0.0, 0.0, 500.0]  # the same labels 500 mm above the CT
    away = write_labelmap(labels, far, root / "elsewhere_seg.nii.gz")
    half = volume.ijk_to_ras.copy()
    half[:3, 3] += [0.0, 0.0, 20.0]  # partly outside: still this CT's segmentation
    partly = write_labelmap(labels, half, root / "partly_seg.nii.gz")
    return image, inside, away, partly


def test_a_named_label_without_voxels_is_stated_by_the_command(ct_and_labels, capsys):
    image, inside, _, _ = ct_and_labels
    names = inside.with_name("inside_seg.json")
    names.write_text(json.dumps({"1": "nodule", "2": "spleen"}))  # no voxel carries label 2
    try:
        assert main(["report", str(image), "--segmentation", str(inside)]) == 0
    finally:
        names.unlink()
    text = capsys.readouterr().out
    assert "nodule: volume" in text and "Spleen: The segment is empty (no voxels)" in text


def test_segmentation_not_overlapping_the_ct_is_refused(ct_and_labels, capsys):
    image, inside, away, partly = ct_and_labels
    assert main(["report", str(image), "--segmentation", str(away), "--json"]) == 2
    err = capsys.readouterr().err
    assert "does not overlap" in err and "elsewhere_seg.nii.gz" in err and "the CT chest " in err
    assert "Traceback" not in err
    for ok in (inside, partly):
        assert main(["report", str(image), "--segmentation", str(ok), "--json"]) == 0
        data = json.loads(capsys.readouterr().out)
        assert [e["value"] for s in data["sentences"] for e in s["evidence"] if e["quantity"] == "volume"]
