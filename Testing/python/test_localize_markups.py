"""Slicer markups JSON in and out: LPS and RAS files, Slicer's own reader/writer (slicer-core), bad files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from voxelfm.errors import InputError
from voxelfm.localize.boxes import Box, box_from_labelmap, box_from_points
from voxelfm.localize.markups_json import read_point_list, write_point_list, write_roi
from voxelfm.localize.points import PointList

RAS = np.array([[10.0, -20.5, 30.25], [-4.0, 5.0, -6.0]])


def _file(tmp_path, markups, name="p.mrk.json"):
    path = tmp_path / name
    path.write_text(json.dumps({"@schema": "x/markups-schema-v1.0.3.json#", "markups": markups}))
    return path


def _fiducial(system, positions, **extra):
    points = [
        {"label": f"P{n}", "position": list(p), "description": f"d{n}"} for n, p in enumerate(positions)
    ]
    return {"type": "Fiducial", "coordinateSystem": system, "controlPoints": points, **extra}


def test_reads_lps_and_ras_files_to_the_same_ras(tmp_path):
    lps = RAS * np.array([-1.0, -1.0, 1.0])
    for system, pos in (("LPS", lps), ("RAS", RAS)):
        pts = read_point_list(_file(tmp_path, [_fiducial(system, pos)], f"{system}.mrk.json"))
        assert pts.names == ["P0", "P1"] and pts.descriptions == ["d0", "d1"]
        np.testing.assert_allclose(pts.ras, RAS)


def test_missing_coordinate_system_means_lps_and_um_units_are_scaled(tmp_path):
    m = _fiducial("LPS", RAS * 1000.0, coordinateUnits="um")
    del m["coordinateSystem"]
    np.testing.assert_allclose(read_point_list(_file(tmp_path, [m])).ras, RAS * np.array([-1.0, -1.0, 1.0]))


def test_unplaced_points_are_skipped(tmp_path):
    m = _fiducial("RAS", RAS)
    m["controlPoints"][0]["positionStatus"] = "undefined"
    pts = read_point_list(_file(tmp_path, [m]))
    assert pts.names == ["P1"]


def test_write_is_lps_and_reads_back(tmp_path):
    pts = PointList(["kidney_left", "kidney_right"], RAS, ["confidence 0.90", "confidence 0.10"], "found")
    path = write_point_list(pts, tmp_path / "out.mrk.json")
    doc = json.loads(path.read_text())
    markup = doc["markups"][0]
    assert doc["@schema"].endswith("markups-schema-v1.0.3.json#")
    assert markup["type"] == "Fiducial" and markup["coordinateSystem"] == "LPS"
    np.testing.assert_allclose([c["position"] for c in markup["controlPoints"]], RAS * [-1, -1, 1])
    back = read_point_list(path)
    assert back.names == pts.names and back.descriptions == pts.descriptions
    np.testing.assert_allclose(back.ras, RAS)


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not a readable markups JSON"),
        (json.dumps({"points": []}), "not a Slicer markups file"),
        (json.dumps({"markups": []}), "holds no markups"),
        (
            json.dumps({"markups": [{"type": "Line", "controlPoints": []}]}),
            "markups 'Line', not a point list",
        ),
        (json.dumps({"markups": [{"type": "ROI"}]}), "markups 'ROI', not a point list"),
        (json.dumps({"markups": [{"controlPoints": []}]}), "without a valid 'type'"),
        (json.dumps({"markups": [_fiducial("XYZ", RAS)]}), "coordinateSystem 'XYZ'"),
        (json.dumps({"markups": [_fiducial("LPS", [[1, 2]])]}), "control point 1 has no valid 'position'"),
    ],
)
def test_bad_markups_files_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.mrk.json"
    path.write_text(content)
    with pytest.raises(InputError, match=message):
        read_point_list(path)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_point_list(tmp_path / "nope.mrk.json")


def test_boxes_from_a_labelmap_and_from_corners():
    lab = np.zeros((10, 12, 14), np.uint8)
    lab[2:5, 3:9, 4:6] = 3
    m = np.diag([2.0, 1.0, 0.5, 1.0])
    m[:3, 3] = [10, 20, 30]
    box = box_from_labelmap(lab, m, 3, "organ")
    np.testing.assert_allclose(box.size, [2 * 2.0, 6 * 1.0, 3 * 0.5])
    np.testing.assert_allclose(box.center, [10 + 4.5 * 2, 20 + 5.5, 30 + 3.0 * 0.5])
    corners = box_from_points(
        PointList(["a", "b", "c"], [[0, 0, 0], [4, -2, 6], [1, 1, 1]]), "box", ["a", "b"]
    )
    np.testing.assert_allclose(corners.center, [2, -1, 3])
    np.testing.assert_allclose(corners.size, [4, 2, 6])
    with pytest.raises(InputError, match="no voxels"):
        box_from_labelmap(lab, m, 7, "absent")
    with pytest.raises(InputError, match="no point called 'z'"):
        box_from_points(PointList(["a", "b"], [[0, 0, 0], [1, 1, 1]]), "box", ["a", "z"])


# ---------------------------------------------------------------- Slicer's own reader and writer (slicer-core)


def _slicer():
    slicer = pytest.importorskip("slicer")
    if not hasattr(slicer, "vtkMRMLMarkupsJsonStorageNode"):
        pytest.skip("slicer-core not installed")
    return slicer


def test_slicer_reads_our_point_list_and_we_read_slicers(tmp_path, mrml_scene):
    _slicer()
    pts = PointList(["a", "b"], RAS, ["confidence 0.50", ""], "ours")
    ours = write_point_list(pts, tmp_path / "ours.mrk.json")
    node = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "read")
    storage = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsJsonStorageNode")
    storage.SetFileName(str(ours))
    assert storage.ReadData(node)
    assert [node.GetNthControlPointLabel(n) for n in range(2)] == ["a", "b"]
    assert node.GetNthControlPointDescription(0) == "confidence 0.50"
    np.testing.assert_allclose([node.GetNthControlPointPosition(n) for n in range(2)], RAS)
    # Slicer writes (LPS); we read the same RAS
    storage.SetFileName(str(tmp_path / "slicer.mrk.json"))
    assert storage.WriteData(node)
    back = read_point_list(tmp_path / "slicer.mrk.json")
    assert back.names == ["a", "b"]
    np.testing.assert_allclose(back.ras, RAS, atol=1e-9)


def test_slicer_reads_our_roi(tmp_path, mrml_scene):
    _slicer()
    c, s = np.cos(0.4), np.sin(0.4)
    axes = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    box = Box("organ box", np.array([5.0, -7.0, 12.0]), np.array([10.0, 20.0, 30.0]), axes)
    path = write_roi(box.markup(), tmp_path / "roi.mrk.json")
    node = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "roi")
    storage = mrml_scene.AddNewNodeByClass("vtkMRMLMarkupsROIJsonStorageNode")
    storage.SetFileName(str(path))
    assert storage.ReadData(node)
    from VoxelFMLib.markups_nodes import roi_from_node

    got = roi_from_node(node)
    np.testing.assert_allclose(got.center, box.center, atol=1e-9)
    np.testing.assert_allclose(got.size, box.size, atol=1e-9)
    np.testing.assert_allclose(got.axes, axes, atol=1e-9)
