"""Report drafting in a real MRML scene (slicer-core): text nodes, edits kept, evidence targets, saving.

Proves: a draft from a findings probe and a segmentation node lands in a NEW vtkMRMLTextNode that keeps its
evidence in the scene file; measurements equal the segments' statistics; a user's edited text node is never
overwritten by a new draft; a sentence under the cursor leads to its segment (slice views jump to its
centroid); .txt/.json are saved with the edited text; no stray nodes; no sources is a clear error.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from report_cases import findings_workspace, planted_ct

from voxelfm.errors import InputError

slicer = pytest.importorskip("slicer")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("slicer-core not installed", allow_module_level=True)

from slicer_builders import add_segmentation  # noqa: E402

from VoxelFMLib import volume_nodes  # noqa: E402
from VoxelFMLib.report_logic import ReportLogic  # noqa: E402
from VoxelFMLib.report_nodes import DRAFT_ATTRIBUTE, draft_of, is_edited  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return findings_workspace(tmp_path_factory.mktemp("slicer_report"))


@pytest.fixture
def case(mrml_scene, workspace):
    volume = planted_ct(True, False, seed=200)
    volume_node = volume_nodes.create_volume_node(mrml_scene, volume, "chest")
    nodule = np.zeros(volume.array.shape, bool)
    nodule[10:19, 10:19, 10:19] = True
    segmentation = add_segmentation(mrml_scene, {"nodule": nodule}, volume.ijk_to_ras)
    logic = ReportLogic(model=str(workspace["model"]), device="cpu", service=workspace["service"])
    return volume_node, segmentation, logic, nodule, volume


def test_draft_goes_to_a_new_text_node_with_its_evidence(case, workspace, mrml_scene):
    from voxelfm.report.measurements import measure_mask

    volume_node, segmentation, logic, nodule, volume = case
    before = mrml_scene.GetNumberOfNodes()
    result = logic.run(volume_node, probes=[workspace["probe"]], segmentation_nodes=[segmentation])
    assert mrml_scene.GetNumberOfNodes() == before + 1  # the text node only: no stray nodes
    node = result.text_node
    assert node.IsA("vtkMRMLTextNode") and node.GetName() == "chest report draft"
    text = node.GetText()
    print(text)
    assert text.splitlines()[1].startswith("Lungs: Lung nodule (probability") and "nodule: volume" in text
    assert all(s.evidence for s in result.draft.sentences)
    measured = next(s for s in result.draft.sentences if s.evidence[0]["kind"] == "measurement")
    truth = measure_mask(nodule, volume.ijk_to_ras, "nodule")
    values = {e["quantity"]: e["value"] for e in measured.evidence}
    assert values["volume"] == pytest.approx(truth.volume_ml)
    assert values["largest_diameter"] == pytest.approx(truth.diameter_mm)
    np.testing.assert_allclose(values["centroid"], truth.centroid_ras, atol=1e-6)
    assert measured.evidence[0]["segmentation"] == segmentation.GetID()

    # the text and the evidence are part of the scene file
    mrml_scene.SetSaveToXMLString(1)
    mrml_scene.Commit()
    restored = slicer.vtkMRMLScene()
    restored.SetLoadFromXMLString(1)
    restored.SetSceneXMLString(mrml_scene.GetSceneXMLString())
    restored.Import()
    again = restored.GetFirstNodeByName("chest report draft")
    assert (
        again.GetText() == text
        and draft_of(again).to_dict()["sentences"] == result.draft.to_dict()["sentences"]
    )


def test_an_edited_draft_is_never_overwritten(case, mrml_scene):
    volume_node, segmentation, logic, _, _ = case
    first = logic.run(volume_node, segmentation_nodes=[segmentation])
    same = logic.run(volume_node, segmentation_nodes=[segmentation], text_node=first.text_node)
    assert same.text_node is first.text_node and same.kept_node is None  # unedited: reused
    edited = first.text_node.GetText() + "Impression: follow-up CT in 3 months.\n"
    first.text_node.SetText(edited)
    assert is_edited(first.text_node)
    second = logic.run(volume_node, segmentation_nodes=[segmentation], text_node=first.text_node)
    assert second.text_node is not first.text_node and second.kept_node is first.text_node
    assert first.text_node.GetText() == edited  # the user's text is untouched
    assert second.text_node.GetName() != first.text_node.GetName()
    user_note = mrml_scene.AddNewNodeByClass("vtkMRMLTextNode", "my notes")
    user_note.SetText("mine")
    third = logic.run(volume_node, segmentation_nodes=[segmentation], text_node=user_note)
    assert (
        third.text_node is not user_note
        and user_note.GetText() == "mine"
        and user_note.GetAttribute(DRAFT_ATTRIBUTE) is None
    )


def test_sentence_evidence_leads_to_the_segment_and_saves(case, mrml_scene, tmp_path):
    volume_node, segmentation, logic, _, _ = case
    result = logic.run(volume_node, segmentation_nodes=[segmentation])
    text = result.text_node.GetText()
    cursor = text.index("nodule: volume") + 3
    index = ReportLogic.sentence_index(result.text_node, cursor)
    assert index is not None and result.draft.sentences[index].text.startswith("nodule: volume")
    assert ReportLogic.sentence_index(result.text_node, 0) is None  # the title is not a sentence
    (target,) = ReportLogic.targets(result.draft, index)
    assert target.kind == "segment" and target.segmentation_node_id == segmentation.GetID()
    slice_node = mrml_scene.AddNewNodeByClass("vtkMRMLSliceNode")
    slice_node.SetOrientationToAxial()
    ReportLogic.jump_to_segment(mrml_scene, target)
    matrix = volume_nodes.matrix_to_numpy(slice_node.GetSliceToRAS())
    assert np.dot(np.asarray(target.ras) - matrix[:3, 3], matrix[:3, 2]) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(InputError, match="does not know where"):
        ReportLogic.open_case(mrml_scene, type(target)("case", "x", case_id="x"))

    result.text_node.SetText(text + "Impression: benign.\n")
    txt, js = ReportLogic.save(result.text_node, tmp_path / "report")
    assert txt.read_text() == text + "Impression: benign.\n"
    data = json.loads(js.read_text())
    assert data["edited_text"].endswith("Impression: benign.\n") and data["sentences"][0]["evidence"]
    ReportLogic.save(result.text_node, tmp_path / "report")  # saved again over its own earlier save
    (tmp_path / "probe.json").write_text('{"type": "voxelfm-probe", "task": "segmentation"}\n')
    with pytest.raises(InputError, match="it is a VoxelFM segmentation probe header"):  # the CLI's rule
        ReportLogic.save(result.text_node, tmp_path / "probe")
    assert not (tmp_path / "probe.txt").exists()


def test_no_sources_is_a_clear_error(case):
    volume_node, _, logic, _, _ = case
    with pytest.raises(InputError, match="Nothing to draft a report from"):
        logic.run(volume_node)
    with pytest.raises(InputError, match="Select the CT volume"):
        logic.run(None)
