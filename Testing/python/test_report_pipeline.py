"""Report drafting from findings probes and measurements (tiny random backbone, synthetic CTs).

Proves: a findings probe fitted on a planted signal drives its sentence on and off; each probe sentence
carries the probe, finding and probability; measurement sentences carry values equal to the segment
statistics; no sources, a probe of another backbone and a non-findings probe are clear errors.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from report_cases import FINDINGS, findings_workspace, planted_ct

from voxelfm.errors import InputError
from voxelfm.features.identity import BackboneMismatchError
from voxelfm.features.spec import ModelSpec
from voxelfm.report.pipeline import ReportPipeline
from voxelfm.report.template_files import load_template, template_from_dict

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return findings_workspace(tmp_path_factory.mktemp("report"))


def _pipeline(ws, model=None, template=None):
    return ReportPipeline(
        ModelSpec(str(model or ws["model"]), device="cpu"), template=template, service=ws["service"]
    )


def _finding_sentences(draft, finding):
    return [s for s in draft.sentences if any(e.get("finding") == finding for e in s.evidence)]


def test_planted_probe_drives_its_sentence_on_and_off(workspace):
    pipeline = _pipeline(workspace)
    with_nodule = pipeline.draft(planted_ct(True, False, seed=100), probes=[workspace["probe"]])
    without = pipeline.draft(planted_ct(False, True, seed=101), probes=[workspace["probe"]])
    on, off = _finding_sentences(with_nodule, "Lung nodule"), _finding_sentences(without, "Lung nodule")
    print("nodule case:", with_nodule.text, "\neffusion case:", without.text)
    assert len(on) == 1 and on[0].call == "present" and on[0].section == "Lungs"
    assert on[0].text.startswith("Lung nodule (probability")
    assert off == []  # abnormal findings only: an absent finding writes nothing
    assert _finding_sentences(without, "Pleural effusion")[0].call == "present"
    assert not _finding_sentences(with_nodule, "Pleural effusion")
    item = on[0].evidence[0]
    assert item["kind"] == "probe" and item["probe"] == "findings" and item["probability"] >= 0.6
    assert all(s.evidence for s in with_nodule.sentences + without.sentences)

    # the template decides how an absent call reads; the evidence is the same probe
    raw = {"include_absent": True, "sections": [{"name": n} for n in load_template().section_names]}
    negatives = _pipeline(workspace, template=template_from_dict(raw))
    absent = _finding_sentences(
        negatives.draft(planted_ct(False, True, seed=101), probes=[workspace["probe"]]), "Lung nodule"
    )
    assert [s.text for s in absent] == ["No lung nodule."] and absent[0].evidence[0]["probability"] < 0.4


def test_probe_probability_is_the_probe_output(workspace):
    from voxelfm.probes.probe_file import load_probe

    volume = planted_ct(True, True, seed=102)
    draft = _pipeline(workspace).draft(volume, probes=[workspace["probe"]])
    probe = load_probe(workspace["probe"])
    spec = ModelSpec(str(workspace["model"]), device="cpu")
    feats = workspace["service"].features(
        volume, spec, preprocess=_pipeline(workspace).preprocess_for(spec, probe.preprocess)
    )
    expected = dict(zip(FINDINGS, probe.predict_one(feats), strict=True))
    got = {
        e["finding"]: e["probability"] for s in draft.sentences for e in s.evidence if e["kind"] == "probe"
    }
    assert got.keys() == set(FINDINGS)
    for name in FINDINGS:
        assert got[name] == pytest.approx(float(expected[name]), rel=1e-6)
    assert draft.sources["probes"][0]["findings"] == FINDINGS


def test_measurement_sentences_carry_the_segment_statistics(workspace):
    from voxelfm.imaging.volume import Volume
    from voxelfm.report.measurements import measure_labelmap
    from voxelfm.report.segmentation_files import SegmentationData, SegmentRef

    volume = planted_ct(True, False, seed=103)
    labels = np.zeros(volume.array.shape, np.int32)
    labels[10:19, 10:19, 10:19] = 1
    labels[20:26, 4:20, 4:8] = 2
    seg = SegmentationData(
        [Volume(labels, volume.ijk_to_ras)],
        [SegmentRef("nodule", "1", 0, 1), SegmentRef("liver", "2", 0, 2)],
        "seg",
    )
    draft = _pipeline(workspace).draft(volume, segmentation=seg)
    truth = {m.segment_id: m for m in measure_labelmap(Volume(labels, volume.ijk_to_ras))}
    by_segment = {s.evidence[0]["segment"]: s for s in draft.sentences}
    assert by_segment["nodule"].section == "Lungs" and by_segment["liver"].section == "Liver"
    for name, sid in (("nodule", "1"), ("liver", "2")):
        values = {e["quantity"]: e["value"] for e in by_segment[name].evidence}
        assert values["volume"] == pytest.approx(truth[sid].volume_ml)
        assert values["largest_diameter"] == pytest.approx(truth[sid].diameter_mm)
        np.testing.assert_allclose(values["centroid"], truth[sid].centroid_ras)
        assert f"volume {truth[sid].volume_ml:.1f} mL" in by_segment[name].text
        assert f"largest diameter {truth[sid].diameter_mm:.1f} mm" in by_segment[name].text
    assert "Lungs: nodule: volume" in draft.text and draft.text.index("Lungs:") < draft.text.index("Liver:")


def test_bad_inputs_are_clear_errors(workspace, tmp_path):
    from voxelfm.probes.probe_file import load_probe, save_probe

    volume = planted_ct(False, False, seed=104)
    with pytest.raises(InputError, match="Nothing to draft a report from"):
        _pipeline(workspace).draft(volume)
    with pytest.raises(BackboneMismatchError, match="fitted on features of model"):
        _pipeline(workspace, model=workspace["other"]).draft(volume, probes=[workspace["probe"]])
    regression = load_probe(workspace["probe"])
    regression.task, regression.kind = "regression", "regression"
    save_probe(regression, tmp_path / "size")
    with pytest.raises(InputError, match="need binary or multi-label classification probes"):
        _pipeline(workspace).draft(volume, probes=[tmp_path / "size"])
