"""VoxelFM Report as a user drives it, on real CTs with the bundled tiny model, in both scene kinds.

draft -> redraft (an unedited draft is refreshed in place) -> edit the text -> redraft (the edited text is kept,
the draft goes to a new node) -> paint more -> redraft (the measurement follows the paint) -> open a similar
case twice (one copy) -> draft from an empty segment (the user is told) -> a labelmap / colour volume as the CT
(refused). After every step: the draft is what a fresh pipeline drafts from the scene as it is now, the
user's text and segments are untouched, the scene census is exact.
"""

from __future__ import annotations

import numpy as np
import pytest
from mrml_scene import require_slicer_core
from report_library_cases import CASES

require_slicer_core("faiss")  # skips this module without slicer-core or faiss

from flow_checks import CT_LOADED, Census, Kept, load_ct  # noqa: E402
from slicer_builders import add_segmentation  # noqa: E402

from voxelfm.errors import InputError  # noqa: E402
from voxelfm.features.service import feature_service  # noqa: E402
from voxelfm.features.spec import ModelSpec  # noqa: E402
from voxelfm.imaging.io import read_volume  # noqa: E402
from voxelfm.report.neighbours import ConsensusConfig  # noqa: E402
from voxelfm.retrieval.pipeline import RetrievalPipeline  # noqa: E402
from voxelfm.retrieval.records import CaseSource  # noqa: E402
from VoxelFMLib import volume_nodes  # noqa: E402
from VoxelFMLib.feature_display import show_features_pca  # noqa: E402
from VoxelFMLib.report_logic import ReportLogic  # noqa: E402

pytestmark = pytest.mark.slicer

MODEL = "voxelfm-tiny"
CT = "totalseg/torso_3mm/ct.nii.gz"
LIBRARY_CASES = ("totalseg_abdomen", "elastix_thorax", "totalseg_pulmonary")  # the small ones
TEXT = {"vtkMRMLTextNode": 1}
CONSENSUS = ConsensusConfig(
    k=1
)  # the nearest case's report sentences are cited (a random tiny model's scores)


@pytest.fixture(scope="module")
def library(tmp_path_factory, data_dir):
    """Three real CTs (their files) with reports, embedded with the bundled tiny model."""
    folder = tmp_path_factory.mktemp("flow_report") / "cases"
    cases = [c for c in CASES if c.case_id in LIBRARY_CASES]
    sources = [
        CaseSource(path=str(data_dir / c.image), case_id=c.case_id, report=c.report, findings=c.findings)
        for c in cases
    ]
    RetrievalPipeline(ModelSpec(MODEL, "cpu"), service=feature_service()).add_sources(
        folder, sources
    ).raise_failures()
    return folder


def _fresh(volume_node, segmentation, library):
    """The draft text a new logic makes from the scene as it is now (nothing reused from earlier drafts)."""
    fresh = ReportLogic(model=MODEL, device="cpu", consensus=CONSENSUS)
    inputs = fresh.prepare(volume_node, segmentation_nodes=[segmentation], library=library)
    return fresh.predict(inputs).text


def _lesion(shape, slices):
    mask = np.zeros(shape, bool)
    mask[slices, 40:55, 50:65] = True
    return mask


def test_draft_edit_redraft_paint_open_case_empty_segment(a_slicer_app, data_dir, library):
    kit, scene = a_slicer_app, a_slicer_app.scene
    ct = load_ct(kit, data_dir / CT, "torso")
    shape = tuple(reversed(ct.GetImageData().GetDimensions()))
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "findings")
    segmentation.CreateDefaultDisplayNodes()
    (lesion_id,) = kit.paint(segmentation, ct, {"lesion": _lesion(shape, slice(50, 56))})
    census, kept = Census(scene), Kept()
    kept.volume(ct)
    kept.segments(segmentation, ct)
    logic = ReportLogic(model=MODEL, device="cpu", consensus=CONSENSUS)
    sources = {"segmentation_nodes": [segmentation], "library": library}

    # 1. Draft: a new text node holding what a fresh pipeline drafts
    first = logic.run(ct, **sources)
    census.step(TEXT)
    kept.check()
    node = first.text_node
    assert node.GetText() == _fresh(ct, segmentation, library) and "lesion" in node.GetText()

    # 2. Redraft into the same, unedited draft: refreshed in place (no new node)
    again = logic.run(ct, text_node=node, **sources)
    census.same()
    assert again.text_node is node and again.kept_node is None

    # 3. The user edits the text, 4. redraft: the edited text is kept, the draft goes to a new node
    node.SetText(node.GetText() + "\nImpression: my own words.")
    kept.text(node)
    census.same()
    redraft = logic.run(ct, text_node=node, **sources)
    census.step(TEXT)
    kept.check()
    assert redraft.kept_node is node and redraft.text_node is not node
    draft_node = redraft.text_node

    # 5. The user paints more of the lesion; the next draft measures the lesion as it is now
    before = [s.text for s in redraft.draft.sentences if "lesion" in s.text]
    kit.stroke(segmentation, lesion_id, _lesion(shape, slice(56, 62)))
    kept.segments(segmentation, ct)
    census.user_step()
    third = logic.run(ct, text_node=draft_node, **sources)
    census.same()
    kept.check()
    assert third.text_node is draft_node and draft_node.GetText() == _fresh(ct, segmentation, library)
    assert [s.text for s in third.draft.sentences if "lesion" in s.text] != before

    # 6. Open a similar case twice (double-clicks on its evidence): loaded once, then shown again
    cases = [
        t
        for i in range(len(third.draft.sentences))
        for t in logic.targets(third.draft, i)
        if t.kind == "case"
    ]
    assert cases, "the draft cites no similar case"
    opened = logic.open_case(scene, cases[0])
    census.step(CT_LOADED)
    assert logic.open_case(scene, cases[0]) is opened
    census.same()
    kept.check()


def test_an_empty_segment_is_said_not_drafted_silently(a_slicer_app, data_dir):
    kit, scene = a_slicer_app, a_slicer_app.scene
    ct = load_ct(kit, data_dir / CT, "torso")
    shape = tuple(reversed(ct.GetImageData().GetDimensions()))
    ijk_to_ras = volume_nodes.node_ijk_to_ras(ct)
    both = add_segmentation(
        scene, {"lesion": _lesion(shape, slice(50, 56)), "cyst": np.zeros(shape, bool)}, ijk_to_ras
    )
    only_empty = add_segmentation(scene, {"cyst": np.zeros(shape, bool)}, ijk_to_ras)
    census = Census(scene)
    logic = ReportLogic(model=MODEL, device="cpu")

    # a painted and an empty segment: the draft says the empty one was left out, and is not empty
    result = logic.run(ct, segmentation_nodes=[both])
    census.step(TEXT)
    assert any("'cyst'" in w and "empty" in w for w in result.draft.warnings), result.draft.warnings
    assert "lesion" in result.text_node.GetText()

    # only an empty segment: nothing to draft from, and the message names it (no empty draft node)
    with pytest.raises(InputError, match="'cyst' are empty"):
        logic.run(ct, segmentation_nodes=[only_empty])
    census.same()


def test_labelmaps_and_colour_volumes_are_not_the_ct(a_slicer_app, data_dir):
    kit, scene = a_slicer_app, a_slicer_app.scene
    ct = load_ct(kit, data_dir / CT, "torso")
    vertebrae = read_volume(str(data_dir / "totalseg/torso_3mm/vertebrae_labels.nii.gz"), check_hu=False)
    labelmap = volume_nodes.create_labelmap_node(
        scene, vertebrae.array.astype(np.int16), volume_nodes.node_ijk_to_ras(ct), "vertebrae"
    )
    features = feature_service().features(volume_nodes.volume_from_node(ct), ModelSpec(MODEL, "cpu"))
    pca = show_features_pca(scene, features, "torso VoxelFM PCA")
    shape = tuple(reversed(ct.GetImageData().GetDimensions()))
    segmentation = add_segmentation(
        scene, {"lesion": _lesion(shape, slice(50, 56))}, volume_nodes.node_ijk_to_ras(ct)
    )
    census = Census(scene)
    logic = ReportLogic(model=MODEL, device="cpu")
    for node, why in ((labelmap, "labelmap"), (pca, "colour")):
        with pytest.raises(InputError, match=why):
            logic.run(node, segmentation_nodes=[segmentation])
        census.same()


def test_the_ct_removed_while_drafting_gets_no_draft(a_slicer_app, data_dir):
    kit, scene = a_slicer_app, a_slicer_app.scene
    ct = load_ct(kit, data_dir / CT, "torso")
    shape = tuple(reversed(ct.GetImageData().GetDimensions()))
    segmentation = add_segmentation(
        scene, {"lesion": _lesion(shape, slice(50, 56))}, volume_nodes.node_ijk_to_ras(ct)
    )
    logic = ReportLogic(model=MODEL, device="cpu")
    inputs = logic.prepare(ct, segmentation_nodes=[segmentation])
    draft = logic.predict(inputs)
    scene.RemoveNode(ct)  # the user deletes the CT while the worker drafts
    census = Census(scene)
    with pytest.raises(InputError, match="removed"):
        logic.write(inputs, draft, ct)
    census.same()
