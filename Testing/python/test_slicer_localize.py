"""Localisation in a real MRML scene (slicer-core): point lists in, a NEW point list out, ROIs, no stray nodes.

Features are planted (``localize_fakes``) so these tests check the MRML side and its rules, fast.
"""

from __future__ import annotations

import numpy as np
import pytest
from localize_fakes import planted_access

slicer = pytest.importorskip("slicer")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("slicer-core not installed", allow_module_level=True)

import vtk  # noqa: E402
from slicer_builders import add_segmentation  # noqa: E402

from voxelfm.errors import InputError  # noqa: E402
from voxelfm.imaging.volume import Volume  # noqa: E402
from voxelfm.localize.config import TransferConfig  # noqa: E402
from voxelfm.localize.pipeline import LocalisationPipeline  # noqa: E402
from VoxelFMLib import markups_nodes, volume_nodes  # noqa: E402
from VoxelFMLib.localize_logic import LocalisationLogic  # noqa: E402
from VoxelFMLib.scene_guard import node_ids  # noqa: E402

SPACING = 2.0


class PlantedPipeline(LocalisationPipeline):
    def access(self, spec=None):
        return planted_access()


def _logic() -> LocalisationLogic:
    cfg = TransferConfig(feature_spacing_mm=SPACING, refine="none", context_cells=1)
    return LocalisationLogic(pipeline=PlantedPipeline(config=cfg))


def _phantom(rng) -> np.ndarray:
    arr = np.full((20, 32, 36), -1000.0, np.float32)
    arr[2:18, 4:28, 4:32] = rng.normal(40, 150, (16, 24, 28))
    return arr


def _grid(first=(60.0, 50.0, -20.0)) -> np.ndarray:
    m = np.diag([-SPACING, -SPACING, SPACING, 1.0])
    m[:3, 3] = first
    return m


def _points_node(scene, names, ras, name="landmarks"):
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
    for label, p in zip(names, ras, strict=True):
        node.AddControlPoint(vtk.vtkVector3d(*p), label)
    return node


def _snapshot(node):
    return [
        (
            node.GetNthControlPointLabel(n),
            tuple(node.GetNthControlPointPosition(n)),
            node.GetNthControlPointDescription(n),
            node.GetNthControlPointPositionStatus(n),
        )
        for n in range(node.GetNumberOfControlPoints())
    ]


@pytest.fixture
def case(mrml_scene):
    rng = np.random.default_rng(0)
    arr = _phantom(rng)
    ref = volume_nodes.create_volume_node(mrml_scene, Volume(arr, _grid(), "reference"))
    shift = np.array([0.0, 0.0, 8.0])  # whole cells: the target is the reference moved up 8 mm
    m = _grid()
    m[:3, 3] += shift
    target = volume_nodes.create_volume_node(mrml_scene, Volume(arr.copy(), m, "target"))
    cells = np.array([[5, 6, 3], [10, 8, 5], [12, 4, 6]], float)
    ras = (cells * 2 + 0.5) @ _grid()[:3, :3].T + _grid()[:3, 3]
    points = _points_node(mrml_scene, ["a", "b", "c"], ras)
    points.AddControlPoint(vtk.vtkVector3d(0, 0, 0), "unplaced")
    points.UnsetNthControlPointPosition(3)
    return ref, target, points, ras + shift


def test_points_from_node_reads_labels_and_skips_unplaced(case):
    _, _, points, _ = case
    pts = markups_nodes.points_from_node(points)
    assert pts.names == ["a", "b", "c"]


def test_predictions_go_to_a_new_node_and_the_users_markups_are_untouched(case, mrml_scene):
    ref, target, points, truth = case
    before = _snapshot(points)
    compare = _points_node(mrml_scene, ["b", "zzz"], [truth[1] + [3.0, 4.0, 0.0], [0, 0, 0]], "user truth")
    compare_before = _snapshot(compare)
    nodes_before = node_ids(mrml_scene)
    out = _logic().run(target, [(ref, points)], compare_node=compare)
    assert out.node.GetID() not in (points.GetID(), compare.GetID())
    labels = [out.node.GetNthControlPointLabel(n) for n in range(out.node.GetNumberOfControlPoints())]
    assert labels == ["a", "b", "c"]
    got = np.array([out.node.GetNthControlPointPosition(n) for n in range(3)])
    np.testing.assert_allclose(got, truth, atol=1e-6)
    assert out.node.GetNthControlPointDescription(0).startswith("confidence ")
    assert out.distances == {"b": pytest.approx(5.0)}
    assert _snapshot(points) == before and _snapshot(compare) == compare_before
    added = node_ids(mrml_scene) - nodes_before  # the point list and its display node only: no stray nodes
    classes = sorted(mrml_scene.GetNodeByID(i).GetClassName() for i in added)
    assert classes == ["vtkMRMLMarkupsFiducialDisplayNode", "vtkMRMLMarkupsFiducialNode"]


def test_output_node_is_reused_only_when_it_is_ours(case, mrml_scene):
    ref, target, points, _ = case
    logic = _logic()
    first = logic.run(target, [(ref, points)])
    again = logic.run(target, [(ref, points)], output_node=first.node)
    assert again.node.GetID() == first.node.GetID()
    before = _snapshot(points)
    refused = logic.run(target, [(ref, points)], output_node=points)  # the user's node as output
    assert refused.node.GetID() != points.GetID() and _snapshot(points) == before
    user_list = _points_node(mrml_scene, ["x"], [[1.0, 2.0, 3.0]], "another user list")
    other = logic.run(target, [(ref, points)], output_node=user_list)
    assert other.node.GetID() != user_list.GetID() and _snapshot(user_list)[0][0] == "x"


def test_a_line_is_not_a_point_list(case, mrml_scene):
    ref, target, _, _ = case
    line = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsLineNode", "a line")
    line.AddControlPoint(vtk.vtkVector3d(1, 2, 3))
    with pytest.raises(InputError, match="'a line' is a vtkMRMLMarkupsLineNode, not a point list"):
        _logic().run(target, [(ref, line)])
    with pytest.raises(InputError, match="at least one reference"):
        _logic().run(target, [])


def test_empty_reference_and_point_outside_are_clear_errors(case, mrml_scene):
    ref, target, _, _ = case
    empty = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "empty")
    with pytest.raises(InputError, match="holds no points"):
        _logic().run(target, [(ref, empty)])
    far = _points_node(mrml_scene, ["far"], [[900.0, 0.0, 0.0]], "far away")
    with pytest.raises(InputError, match="'far' of reference 'far away'.*outside"):
        _logic().run(target, [(ref, far)])


def test_rois_from_corner_points_and_from_a_segment(case, mrml_scene):
    ref, _, _, _ = case
    corners = _points_node(
        mrml_scene, ["lo", "hi", "other"], [[0, 0, 0], [10, -20, 30], [5, 5, 5]], "corners"
    )
    roi = _logic().box_from_points(corners, "organ box", ["lo", "hi"])
    assert roi.IsA("vtkMRMLMarkupsROINode")
    box = markups_nodes.roi_from_node(roi)
    np.testing.assert_allclose(box.center, [5, -10, 15], atol=1e-9)
    np.testing.assert_allclose(box.size, [10, 20, 30], atol=1e-9)
    mask = np.zeros((20, 32, 36), bool)
    mask[5:9, 10:14, 6:16] = True
    seg = add_segmentation(mrml_scene, {"kidney": mask}, volume_nodes.node_ijk_to_ras(ref))
    sid = seg.GetSegmentation().GetNthSegmentID(0)
    before = node_ids(mrml_scene)
    roi2 = _logic().box_from_segment(seg, sid, ref)
    seg_box = markups_nodes.roi_from_node(roi2)
    np.testing.assert_allclose(
        sorted(seg_box.size), sorted([10 * SPACING, 4 * SPACING, 4 * SPACING]), atol=1e-6
    )
    added = {mrml_scene.GetNodeByID(i).GetClassName() for i in node_ids(mrml_scene) - before}
    assert added == {"vtkMRMLMarkupsROINode", "vtkMRMLMarkupsROIDisplayNode"}


def test_jump_to_point_centres_the_slice_views(mrml_scene):
    slice_node = mrml_scene.AddNewNodeByClass("vtkMRMLSliceNode", "Red")
    slice_node.SetOrientationToAxial()
    assert markups_nodes.jump_slices_to(mrml_scene, np.array([12.0, -34.0, 56.0])) >= 1
    m = slice_node.GetSliceToRAS()
    assert (m.GetElement(0, 3), m.GetElement(1, 3), m.GetElement(2, 3)) == pytest.approx((12.0, -34.0, 56.0))
