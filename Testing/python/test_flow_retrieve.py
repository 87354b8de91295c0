"""VoxelFM Retrieve as a user drives it, on real CTs with the bundled tiny model, in both scene kinds.

VoxelFM Features has shown its PCA colour volume and a labelmap is loaded -> "Add all loaded volumes" -> query
by whole volume, ROI, segment and point (as the mode selector picks the nodes) -> load a hit twice -> remove a
case -> query again; and the wrong inputs a user meets: ROI mode with no ROI, a segment id of another
segmentation, a labelmap or colour volume as the query. After every step: hits are what a fresh pipeline finds
in the library as it is now, the scene census is exact, the user's volumes and segments are untouched.
"""

from __future__ import annotations

import numpy as np
import pytest
from mrml_scene import require_slicer_core
from retrieval_helpers import LIBRARY_CTS, altered

require_slicer_core("faiss")  # skips this module without slicer-core or faiss

from flow_checks import CT_LOADED, Census, Kept, load_ct  # noqa: E402
from slicer_builders import add_segmentation  # noqa: E402

from voxelfm.errors import InputError  # noqa: E402
from voxelfm.features.service import feature_service  # noqa: E402
from voxelfm.features.spec import ModelSpec  # noqa: E402
from voxelfm.imaging.io import read_volume  # noqa: E402
from voxelfm.retrieval.pipeline import RetrievalPipeline  # noqa: E402
from voxelfm.retrieval.regions import BoxRegion, MaskRegion, SphereRegion  # noqa: E402
from VoxelFMLib import RetrievalLogic, volume_nodes  # noqa: E402
from VoxelFMLib.case_images import first_ct_volume  # noqa: E402
from VoxelFMLib.feature_display import create_rgb_volume_node, show_features_pca  # noqa: E402

pytestmark = pytest.mark.slicer

MODEL = "voxelfm-tiny"
MADE = {"vtkMRMLScalarVolumeNode": 1, "vtkMRMLScalarVolumeDisplayNode": 1}


def _fresh(library, node, region=None, k=10):
    """(case id, score) of what a new pipeline finds in the library as it is now."""
    pipeline = RetrievalPipeline(ModelSpec(MODEL, "cpu"), service=feature_service())
    result = pipeline.query(library, volume_nodes.volume_from_node(node, world=True), k, region)
    return [(h.case_id, round(h.score, 5)) for h in result.hits]


def _hits(result):
    return [(h.case_id, round(h.score, 5)) for h in result.hits]


@pytest.fixture
def scene(a_slicer_app, data_dir):
    """Two CTs loaded from files, one made in the scene (no file), the PCA colour volume VoxelFM Features
    shows, and a labelmap: what "Add all loaded volumes" finds."""
    kit, scene = a_slicer_app, a_slicer_app.scene
    torso = load_ct(kit, data_dir / LIBRARY_CTS["torso"], "torso")
    pulmonary = load_ct(kit, data_dir / LIBRARY_CTS["pulmonary"], "pulmonary")
    features = feature_service().features(volume_nodes.volume_from_node(torso), ModelSpec(MODEL, "cpu"))
    pca = show_features_pca(scene, features, "torso VoxelFM PCA")
    thorax = volume_nodes.create_volume_node(  # made after the PCA: later in the scene's node order
        scene, read_volume(str(data_dir / LIBRARY_CTS["elastix"])), name="thorax"
    )
    vertebrae = read_volume(str(data_dir / "totalseg/torso_3mm/vertebrae_labels.nii.gz"), check_hu=False)
    labelmap = volume_nodes.create_labelmap_node(
        scene, vertebrae.array.astype(np.int16), volume_nodes.node_ijk_to_ras(torso), "vertebrae"
    )
    return kit, {"torso": torso, "pulmonary": pulmonary, "thorax": thorax, "pca": pca, "labelmap": labelmap}


def test_add_all_query_every_mode_load_remove_query_again(scene, tmp_path):
    kit, nodes = scene
    mrml = kit.scene
    library = tmp_path / "cases"
    census, kept = Census(mrml), Kept()
    for name in ("torso", "pulmonary", "thorax"):
        kept.volume(nodes[name])
    logic = RetrievalLogic(model=MODEL, device="cpu")

    # 1. "Add all loaded volumes": the three CTs; the PCA colour volume and the labelmap skipped, and said so
    prepared = logic.prepare_scene_volumes(mrml)
    report = logic.add(library, prepared.sources)
    assert not report.failed
    assert sorted(c.case_id for c in logic.cases(library)) == ["pulmonary", "thorax", "torso"]
    assert "torso VoxelFM PCA" in prepared.note and "vertebrae" in prepared.note
    census.same()
    kept.check()

    # 2. The user makes a query volume (a noisy copy of "pulmonary"), a segment, an ROI and a point on it
    query = volume_nodes.create_volume_node(
        mrml, altered(volume_nodes.volume_from_node(nodes["pulmonary"]), "noise"), name="query"
    )
    box = np.zeros(tuple(reversed(query.GetImageData().GetDimensions())), bool)
    box[40:70, 40:70, 40:70] = True
    segmentation = add_segmentation(mrml, {"heart region": box}, volume_nodes.node_ijk_to_ras(query))
    segment_id = segmentation.GetSegmentation().GetNthSegmentID(0)
    centre = volume_nodes.node_ijk_to_ras(query) @ np.array([55.0, 55.0, 55.0, 1.0])
    roi = mrml.AddNewNodeByClass("vtkMRMLMarkupsROINode", "roi")
    roi.SetCenter(*centre[:3])
    roi.SetSize(40.0, 40.0, 40.0)
    point = mrml.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "point")
    point.AddControlPoint(*centre[:3])
    census.user_step()
    kept.volume(query)
    kept.segments(segmentation, query)

    # 3. Query by whole volume, ROI, segment and point, each as the mode selector picks the nodes
    everything = {
        "roi_node": roi,
        "segmentation_node": segmentation,
        "segment_id": segment_id,
        "point_node": point,
    }
    expected_region = {"volume": type(None), "roi": BoxRegion, "segment": MaskRegion, "point": SphereRegion}
    for mode, region_type in expected_region.items():
        inputs = logic.prepare(query, radius_mm=20.0, mode=mode, **everything)
        assert isinstance(inputs.region, region_type), mode
        result = logic.predict(library, inputs, k=3)
        assert _hits(result) == _fresh(library, query, inputs.region, k=3), mode
        census.same()
        kept.check()
    assert logic.run_query(library, query, k=3).hits[0].case_id == "pulmonary"
    # the user drags the point and the ROI: the next query uses where they are now
    point.SetNthControlPointPosition(0, *(centre[:3] + 12.0))
    roi.SetCenter(*(centre[:3] - 9.0))
    moved = {m: logic.prepare(query, radius_mm=20.0, mode=m, **everything).region for m in ("point", "roi")}
    np.testing.assert_allclose(moved["point"].center, centre[:3] + 12.0)
    np.testing.assert_allclose(moved["roi"].center, centre[:3] - 9.0, atol=1e-6)
    census.same()

    # 4. A mode without its node is a clear error, never a silent whole-volume query
    for mode, missing in (("roi", "roi_node"), ("segment", "segmentation_node"), ("point", "point_node")):
        with pytest.raises(InputError, match="Select|select"):
            logic.prepare(query, mode=mode, **{**everything, missing: None})
    # ... and a segment id left from another segmentation names the problem
    other = add_segmentation(mrml, {"other": box}, volume_nodes.node_ijk_to_ras(query), node=None)
    census.user_step()
    other_id = other.GetSegmentation().GetNthSegmentID(0)
    if segmentation.GetSegmentation().GetSegment(other_id) is not None:  # same generated id: make it differ
        other.GetSegmentation().GetSegment(other_id).SetName("other")
        other_id = "VoxelFM_test_other_segment"
    with pytest.raises(InputError, match="has no segment"):
        logic.prepare(query, segmentation_node=segmentation, segment_id=other_id, mode="segment")
    census.same()

    # 5. Load a hit twice: a case added from a scene volume shows its node; a file case loads once
    hits = {h.case_id: h for h in logic.run_query(library, query, k=3).hits}
    assert logic.load_hit(mrml, hits["thorax"]).node is nodes["thorax"]
    census.same()
    kept.forget(nodes["pulmonary"])
    for node in _volume_and_its_nodes(nodes["pulmonary"]):  # the user closes "pulmonary"
        mrml.RemoveNode(node)
    census.step(removed=CT_LOADED)
    first = logic.load_hit(mrml, hits["pulmonary"])
    census.step(CT_LOADED)
    again = logic.load_hit(mrml, hits["pulmonary"])
    assert again.node is first.node
    census.same()

    # 6. Remove a case, query again: it is gone, the rest is what a fresh query finds
    logic.remove_case(library, "torso")
    result = logic.run_query(library, query, k=3)
    assert "torso" not in [h.case_id for h in result.hits]
    assert _hits(result) == _fresh(library, query, k=3)
    census.same()
    kept.check()


def test_labelmaps_and_colour_volumes_are_not_cases_or_queries(scene, tmp_path):
    kit, nodes = scene
    logic = RetrievalLogic(model=MODEL, device="cpu")
    census = Census(kit.scene)
    for node, why in ((nodes["labelmap"], "labelmap"), (nodes["pca"], "colour")):
        with pytest.raises(InputError, match=why):
            logic.prepare_volumes([node])  # "Add volume" with it selected
        with pytest.raises(InputError, match=why):
            logic.prepare(node, mode="volume")
        census.same()


def test_a_module_picks_a_ct_as_its_default_volume(a_slicer_app, data_dir):
    """The default input volume (module_widget.initializeParameterNode) skips labelmaps and colour volumes."""
    scene = a_slicer_app.scene
    vertebrae = read_volume(str(data_dir / "totalseg/torso_3mm/vertebrae_labels.nii.gz"), check_hu=False)
    volume_nodes.create_labelmap_node(
        scene, vertebrae.array.astype(np.int16), vertebrae.ijk_to_ras, "vertebrae"
    )
    rgb = np.zeros((4, 5, 6, 3), np.uint8)
    create_rgb_volume_node(scene, rgb, np.eye(4), "a PCA")
    assert first_ct_volume(scene) is None
    ct = load_ct(a_slicer_app, data_dir / LIBRARY_CTS["elastix"], "thorax")
    assert first_ct_volume(scene) is ct


def _volume_and_its_nodes(node) -> list:
    """A volume node with its display and storage nodes (what the Data module deletes together)."""
    return [n for n in (node.GetDisplayNode(), node.GetStorageNode(), node) if n is not None]
