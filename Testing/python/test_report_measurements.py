"""Segment measurements for the draft equal Slicer's Segment Statistics (ITK's label shape statistics).

Volume, centroid (RAS) and largest diameter (ITK's Feret diameter) of each segment are compared with
SimpleITK's LabelShapeStatisticsImageFilter, the ITK filter behind Slicer's labelmap statistics, on a real
label image with a flipped axis and on an oblique grid; the same segments in a Slicer segmentation node
(separate layers, a shared layer, a parent transform) measure the same.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from voxelfm.errors import InputError
from voxelfm.imaging.io import array_to_sitk, read_volume, write_labelmap
from voxelfm.imaging.volume import Volume
from voxelfm.report.measurements import largest_diameter, measure_labelmap, measure_mask
from voxelfm.report.segmentation_files import read_segmentation


def itk_statistics(labels: np.ndarray, ijk_to_ras: np.ndarray) -> dict[int, tuple[float, float, np.ndarray]]:
    """value -> (volume mL, Feret diameter mm, centroid RAS) from ITK."""
    f = sitk.LabelShapeStatisticsImageFilter()
    f.ComputeFeretDiameterOn()
    f.Execute(array_to_sitk(labels.astype(np.uint16), ijk_to_ras))
    out = {}
    for v in f.GetLabels():
        c = np.array(f.GetCentroid(v))
        c[:2] *= -1  # LPS -> RAS
        out[int(v)] = (f.GetPhysicalSize(v) / 1000.0, f.GetFeretDiameter(v), c)
    return out


def assert_matches_itk(measured, labels, ijk_to_ras):
    itk = itk_statistics(labels, ijk_to_ras)
    assert {int(m.segment_id) for m in measured} == set(itk)
    for m in measured:
        volume, feret, centroid = itk[int(m.segment_id)]
        assert m.volume_ml == pytest.approx(volume, rel=1e-9)
        assert m.diameter_mm == pytest.approx(feret, rel=1e-9)
        np.testing.assert_allclose(m.centroid_ras, centroid, atol=1e-6)


def test_real_labels_on_a_flipped_grid_match_itk(data_dir):
    labels = read_volume(str(data_dir / "totalseg/chest_dicom/labels.nii.gz"), check_hu=False)
    arr = labels.array.astype(np.int32)
    values, counts = np.unique(arr[arr > 0], return_counts=True)
    # the smallest organs: ITK's Feret diameter is quadratic in border voxels
    keep = values[np.argsort(counts)[:4]]
    arr = np.where(np.isin(arr, keep), arr, 0)
    assert_matches_itk(measure_labelmap(Volume(arr, labels.ijk_to_ras)), arr, labels.ijk_to_ras)


def oblique_matrix() -> np.ndarray:
    """Anisotropic spacing, a rotation and a flipped axis (det < 0)."""
    c, s = np.cos(0.5), np.sin(0.5)
    rotation = np.array([[c, -s, 0.0], [s * 0.8, c * 0.8, -0.6], [s * 0.6, c * 0.6, 0.8]])
    m = np.eye(4)
    m[:3, :3] = rotation @ np.diag([0.8, -1.1, 2.5])
    m[:3, 3] = (-40.0, 12.5, 7.0)
    return m


def test_oblique_anisotropic_grid_matches_itk():
    rng = np.random.default_rng(0)
    labels = np.zeros((12, 14, 16), np.int32)
    labels[2:9, 3:10, 4:13] = 1
    labels[rng.random(labels.shape) < 0.01] = 2  # scattered voxels: a disconnected segment
    labels[6, 2:12, 8] = 3  # a line: its diameter is its length
    m = oblique_matrix()
    measured = measure_labelmap(Volume(labels, m))
    assert_matches_itk(measured, labels, m)
    line = next(x for x in measured if x.segment_id == "3")
    assert line.diameter_mm == pytest.approx(9 * np.linalg.norm(m[:3, 1]))


def test_degenerate_shapes():
    assert largest_diameter(np.zeros((1, 3))) == 0.0
    assert largest_diameter(np.array([[0.0, 0, 0], [3, 4, 0]])) == pytest.approx(5.0)
    flat = np.c_[np.random.default_rng(1).random((50, 2)) * 10, np.zeros(50)]
    brute = max(np.linalg.norm(a - b) for a in flat for b in flat)
    assert largest_diameter(flat) == pytest.approx(brute)
    empty = measure_mask(np.zeros((2, 2, 2), bool), np.eye(4), "none")
    assert empty.voxels == 0 and empty.volume_ml == 0.0
    with pytest.raises(InputError, match="3D mask"):
        measure_mask(np.zeros((2, 2), bool), np.eye(4), "flat")


def test_segmentation_files_keep_names(tmp_path):
    from voxelfm.segment.classes import SegmentClass
    from voxelfm.segment.files import write_seg_nrrd

    labels = np.zeros((6, 7, 8), np.uint8)
    labels[1:3, 1:4, 1:5] = 1
    labels[4:6, 4:6, 5:8] = 2
    m = np.diag([0.7, 0.8, 2.5, 1.0])
    classes = [SegmentClass(1, "nodule", (1, 0, 0)), SegmentClass(2, "liver", (0, 1, 0))]
    seg = read_segmentation(write_seg_nrrd(labels, m, tmp_path / "case.seg.nrrd", classes))
    assert [s.name for s in seg.segments] == ["nodule", "liver"]
    got = {x.name: x for x in seg.measurements()}
    ref = {x.segment_id: x for x in measure_labelmap(Volume(labels.astype(np.int32), m))}
    assert got["nodule"].volume_ml == pytest.approx(ref["1"].volume_ml)
    assert got["liver"].diameter_mm == pytest.approx(ref["2"].diameter_mm)

    lab = write_labelmap(labels, m, tmp_path / "labels.nii.gz")
    (tmp_path / "labels.json").write_text(json.dumps({"1": "lung_nodule", "2": "liver"}))
    assert [s.name for s in read_segmentation(lab).segments] == ["lung_nodule", "liver"]
    (tmp_path / "labels.json").unlink()
    assert [s.name for s in read_segmentation(lab).segments] == ["label 1", "label 2"]
    with pytest.raises(InputError, match="no segments"):
        read_segmentation(write_labelmap(np.zeros_like(labels), m, tmp_path / "empty.nii.gz"))
    with pytest.raises(InputError, match="not found"):
        read_segmentation(tmp_path / "missing.nii.gz")


@pytest.fixture
def slicer_segmentation(mrml_scene):
    from slicer_builders import add_segmentation, oblique_flipped_matrix

    m = oblique_flipped_matrix()
    a = np.zeros((8, 9, 10), bool)
    a[2:6, 2:7, 3:8] = True
    b = np.zeros((8, 9, 10), bool)
    b[5:8, 6:9, 0:3] = True
    node = add_segmentation(mrml_scene, {"nodule": a, "liver": b}, m)
    return node, {"nodule": a, "liver": b}, m


def _compare(measured, masks, m, to_world=None):
    to_world = np.eye(4) if to_world is None else to_world
    for x in measured:
        ref = measure_mask(masks[x.name], to_world @ m, x.name)
        assert x.voxels == ref.voxels
        assert x.volume_ml == pytest.approx(ref.volume_ml)
        assert x.diameter_mm == pytest.approx(ref.diameter_mm)
        np.testing.assert_allclose(x.centroid_ras, ref.centroid_ras, atol=1e-6)


def test_slicer_segments_measure_like_segment_statistics(slicer_segmentation, mrml_scene):
    from VoxelFMLib.segment_measurements import measure_segmentation
    from VoxelFMLib.volume_nodes import numpy_to_matrix

    node, masks, m = slicer_segmentation
    n_nodes = mrml_scene.GetNumberOfNodes()
    measured = measure_segmentation(node)
    assert [x.name for x in measured] == ["nodule", "liver"] and all(
        x.source == node.GetID() for x in measured
    )
    _compare(measured, masks, m)
    node.GetSegmentation().CollapseBinaryLabelmaps(False)  # one shared layer, as the Segment Editor paints
    assert node.GetSegmentation().GetNumberOfLayers() == 1
    _compare(measure_segmentation(node), masks, m)
    shift = np.eye(4)
    shift[:3, 3] = (10.0, -5.0, 2.0)
    transform = mrml_scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    transform.SetMatrixTransformToParent(numpy_to_matrix(shift))
    node.SetAndObserveTransformNodeID(transform.GetID())
    _compare(measure_segmentation(node), masks, m, shift)
    assert mrml_scene.GetNumberOfNodes() == n_nodes + 1  # only the transform we added: no stray nodes
