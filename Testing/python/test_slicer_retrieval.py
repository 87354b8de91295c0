"""VoxelFMLib.RetrievalLogic on real MRML (slicer-core) with real CT and a tiny random backbone.

Volume nodes (three loaded by Slicer's reader from files, one made in the scene) build a library; altered
copies shown as nodes retrieve their source at rank 1; an ROI node, a point and a segment query find the case
and (ROI, point) a place inside the liver; a hit loads as a volume node (or reuses the node already showing
it) and the slice views jump there; no query leaves nodes behind.
"""

from __future__ import annotations

import numpy as np
import pytest
from retrieval_helpers import ABDOMEN_IN_TORSO, LIBRARY_CTS, altered, tiny_backbone

slicer = pytest.importorskip("slicer")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("slicer-core not installed", allow_module_level=True)
pytest.importorskip("faiss")

from slicer_builders import add_segmentation  # noqa: E402

from voxelfm.errors import InputError  # noqa: E402
from voxelfm.imaging.io import read_volume  # noqa: E402
from VoxelFMLib import RetrievalLogic, volume_nodes  # noqa: E402
from VoxelFMLib.retrieval_logic import jump_slices  # noqa: E402

pytestmark = pytest.mark.slicer


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_backbone(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def library(data_dir, model, tmp_path_factory):
    """A library of three CT files and one volume that exists only in the scene (the chest DICOM's voxels)."""
    from voxelfm.retrieval.records import CaseSource

    chest = read_volume(str(data_dir / LIBRARY_CTS["chest"]), name="chest")
    sources = [
        CaseSource(path=str(data_dir / LIBRARY_CTS[n]), case_id=n) for n in ("torso", "pulmonary", "elastix")
    ]
    folder = tmp_path_factory.mktemp("scene_lib") / "cases"
    logic = RetrievalLogic(model=str(model), device="cpu")
    assert not logic.add(folder, [*sources, CaseSource(volume=chest, case_id="chest")]).failed
    return logic, folder, chest


@pytest.fixture
def scene_library(library, mrml_scene, data_dir):
    """The library and its cases shown as nodes: three read by Slicer from their files, one made in the scene."""
    logic, folder, chest = library
    nodes = {
        n: volume_nodes.load_volume_file(mrml_scene, str(data_dir / LIBRARY_CTS[n]), name=n)
        for n in ("torso", "pulmonary", "elastix")
    }
    nodes["chest"] = volume_nodes.create_volume_node(mrml_scene, chest, name="chest")
    return logic, folder, nodes


def _liver(data_dir, shape):
    truth = np.zeros(shape, bool)
    labels = read_volume(str(data_dir / "totalseg/abdomen_3mm/labels.nii.gz"), check_hu=False).array
    truth[ABDOMEN_IN_TORSO:] = labels == 5
    return truth


def _inside(truth, node, ras) -> bool:
    ijk = np.linalg.inv(volume_nodes.node_ijk_to_ras(node)) @ np.array([*ras, 1.0])
    k, j, i = (int(round(v)) for v in ijk[2::-1])
    return bool(truth[k, j, i])


def test_library_records_nodes_with_their_files(scene_library, tmp_path):
    logic, _, nodes = scene_library
    lib = tmp_path / "from_nodes"
    report = logic.add_volume_nodes(lib, list(nodes.values()))
    assert not report.failed and len(report.added) == 4
    cases = {c.case_id: c for c in logic.cases(lib)}
    assert set(cases) == set(nodes)
    assert cases["torso"].path.endswith("torso_3mm/ct.nii.gz")
    assert cases["chest"].path == "" and cases["chest"].source_key.startswith("volume:")
    assert "4 case(s)" in logic.describe(lib)
    again = logic.add_volume_nodes(lib, [nodes["torso"], nodes["chest"]])  # already there: skipped
    assert not again.added and len(again.skipped) == 2


def test_library_model_is_what_a_run_without_a_model_choice_loads(library, tmp_path):
    """The model panel checks (and offers to download) this model when the panel names none."""
    logic, folder, _ = library
    assert logic.library_model(folder) == logic.spec.model  # the tiny backbone the library was built with
    assert RetrievalLogic.library_model(tmp_path / "new library") == ""  # none yet: the panel's choice
    (tmp_path / "not a library").mkdir()
    assert RetrievalLogic.library_model(tmp_path / "not a library") == ""


@pytest.mark.parametrize("name, kind", [("torso", "crop"), ("pulmonary", "flip"), ("chest", "noise")])
def test_altered_copy_nodes_retrieve_their_source(scene_library, mrml_scene, name, kind):
    logic, lib, nodes = scene_library
    copy = volume_nodes.create_volume_node(
        mrml_scene, altered(volume_nodes.volume_from_node(nodes[name]), kind), name=f"{name} {kind}"
    )
    before = mrml_scene.GetNumberOfNodes()
    result = logic.run_query(lib, copy, k=3)
    assert result.hits[0].case_id == name
    assert mrml_scene.GetNumberOfNodes() == before  # no stray nodes


def test_roi_point_and_segment_queries_find_the_case_and_place(scene_library, mrml_scene, data_dir, tmp_path):
    from scipy import ndimage

    logic, lib, nodes = scene_library
    torso = nodes["torso"]
    noisy = volume_nodes.create_volume_node(
        mrml_scene, altered(volume_nodes.volume_from_node(torso), "noise", seed=2), name="noisy torso"
    )
    truth = _liver(data_dir, slicer.util.arrayFromVolume(torso).shape)
    spacing = np.linalg.norm(volume_nodes.node_ijk_to_ras(torso)[:3, :3], axis=0)[::-1]
    k, j, i = np.unravel_index(
        np.argmax(ndimage.distance_transform_edt(truth, sampling=spacing)), truth.shape
    )
    centre = (volume_nodes.node_ijk_to_ras(torso) @ np.array([i, j, k, 1.0]))[:3]
    roi = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "roi")
    roi.SetCenter(*centre)
    roi.SetSize(40.0, 40.0, 40.0)
    point = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "point")
    point.AddControlPoint(*centre)
    segmentation = add_segmentation(mrml_scene, {"liver": truth}, volume_nodes.node_ijk_to_ras(torso))
    liver_id = segmentation.GetSegmentation().GetNthSegmentID(0)
    before = mrml_scene.GetNumberOfNodes()
    for region in ({"roi_node": roi}, {"point_node": point, "radius_mm": 15.0}):
        result = logic.run_query(lib, noisy, k=2, **region)
        assert result.hits[0].case_id == "torso" and _inside(truth, torso, result.hits[0].ras), region
    result = logic.run_query(
        lib, noisy, k=2, segmentation_node=segmentation, segment_id=liver_id, thumbnails=tmp_path / "thumbs"
    )
    assert result.hits[0].case_id == "torso" and result.hits[0].ras is not None
    assert result.hits[0].thumbnail and (tmp_path / "thumbs").is_dir()
    assert mrml_scene.GetNumberOfNodes() == before  # the segment export left nothing behind
    with pytest.raises(InputError, match="one region at a time"):
        logic.prepare(noisy, roi_node=roi, point_node=point)
    roi.SetCenter(9000.0, 9000.0, 9000.0)
    with pytest.raises(InputError, match="lies outside the volume"):
        logic.run_query(lib, noisy, roi_node=roi)


def test_load_hit_reuses_or_loads_the_case_and_jumps_there(scene_library, mrml_scene):
    logic, lib, nodes = scene_library
    query = volume_nodes.create_volume_node(
        mrml_scene, altered(volume_nodes.volume_from_node(nodes["pulmonary"]), "noise"), name="q"
    )
    hit = logic.run_query(lib, query, k=1, point_node=None, roi_node=None)
    region_hit = logic.run_query(lib, query, k=1, roi_node=_roi(mrml_scene, (0.0, 200.0, 600.0))).hits[0]
    before = mrml_scene.GetNumberOfNodes()
    view = logic.load_hit(mrml_scene, hit.hits[0])
    assert view.node is nodes["pulmonary"] and mrml_scene.GetNumberOfNodes() == before  # already shown
    mrml_scene.RemoveNode(nodes["pulmonary"])
    before = mrml_scene.GetNumberOfNodes()
    view = logic.load_hit(mrml_scene, region_hit)
    assert view.node.GetName() == region_hit.case_id and view.node.GetImageData() is not None
    assert mrml_scene.GetNumberOfNodes() == before + 3  # the volume, its storage and display nodes
    slice_node = slicer.vtkMRMLSliceNode()
    slice_node.SetLayoutName("Red")
    mrml_scene.AddNode(slice_node)
    slice_node.SetDimensions(256, 256, 1)
    jump_slices(mrml_scene, view.ras)
    m = slice_node.GetSliceToRAS()
    np.testing.assert_allclose([m.GetElement(r, 3) for r in range(3)], view.ras, atol=1e-6)
    mrml_scene.RemoveNode(nodes["chest"])  # a scene-only case that is gone cannot be opened
    chest_hit = next(h for h in logic.run_query(lib, query, k=4).hits if h.case_id == "chest")
    with pytest.raises(InputError, match="cannot be opened"):
        logic.load_hit(mrml_scene, chest_hit)


def _roi(scene, centre):
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "roi")
    roi.SetCenter(*centre)
    roi.SetSize(30.0, 30.0, 30.0)
    return roi
